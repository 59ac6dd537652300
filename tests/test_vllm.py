"""vLLM, which cannot run here: the exact engine arguments, requests and server command line.

A fake `vllm` package in sys.modules records what nerft asks of it; the LoRA rank, the stop
tokens, the prompt token ids and the structured-output constraint are checked exactly.
"""

import json
import re
import shutil
import sys
import types

import pytest

from nerft.errors import ModelError
from nerft.inference.chat import ChatTemplate
from nerft.inference.engines import ChatRequest, Generation
from nerft.inference.source import lora_rank, resolve_model, vllm_max_lora_rank
from nerft.inference.structured import output_json_schema, output_regex
from nerft.prompts import get_format
from nerft.runfolder import load_run, write_run
from nerft.serving.commands import llamafactory_api_command, vllm_server_command

TEXTS = ["孙丽在南京开了书店。", "京东与沃尔玛合作。", "今天天气很好。"]


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __eq__(self, other):
        return type(self) is type(other) and (self.args, self.kwargs) == (other.args, other.kwargs)

    def __repr__(self):
        return f"{type(self).__name__}{self.args}{self.kwargs}"


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model):
    """Install a fake vllm; `calls` collects LLM(...) kwargs and generate(...) arguments."""
    from transformers import AutoTokenizer

    calls = {"llm": [], "generate": []}

    class SamplingParams(Recorded):
        pass

    class StructuredOutputsParams(Recorded):
        pass

    class LoRARequest(Recorded):
        pass

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"].append(kwargs)
            self.tokenizer = AutoTokenizer.from_pretrained(tiny_model)

        def get_tokenizer(self):
            return self.tokenizer

        def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
            calls["generate"].append({"prompts": prompts, "params": sampling_params, "lora_request": lora_request, "use_tqdm": use_tqdm})
            reasons = ["stop", "length"]
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"answer {len(p['prompt_token_ids'])}", finish_reason=reasons[i % 2])])
                for i, p in enumerate(prompts)
            ]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, SamplingParams, "0.11.0"
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = StructuredOutputsParams
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = LoRARequest
    for name, module in {"vllm": vllm, "vllm.sampling_params": sampling, "vllm.lora": lora, "vllm.lora.request": lora_request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    calls["classes"] = types.SimpleNamespace(SamplingParams=SamplingParams, StructuredOutputsParams=StructuredOutputsParams, LoRARequest=LoRARequest)
    return calls


@pytest.fixture
def rank64_run(tiny_run, tmp_path):
    """The tiny run with its adapter_config.json saying r=64 (what the tutorials trained)."""
    run_dir = tmp_path / "rank64"
    shutil.copytree(tiny_run, run_dir)
    config = json.loads((run_dir / "adapter_config.json").read_text())
    config["r"] = 64
    (run_dir / "adapter_config.json").write_text(json.dumps(config))
    info = load_run(run_dir)
    info.adapter_dir = run_dir
    write_run(info)
    return run_dir


# ---- LoRA rank ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "allowed"), [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (64, 64), (65, 128), (300, 320), (512, 512)])
def test_max_lora_rank_is_the_smallest_value_vllm_accepts(rank, allowed):
    assert vllm_max_lora_rank(rank) == allowed


def test_a_rank_beyond_vllm_says_to_merge():
    with pytest.raises(ModelError, match="LoRA rank 513 is larger than vLLM supports"):
        vllm_max_lora_rank(513)


def test_rank_is_read_from_the_adapter_including_rank_pattern(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"q_proj": 64}}))
    assert lora_rank(tmp_path) == 64
    (tmp_path / "adapter_config.json").write_text("{\n  broken")
    with pytest.raises(ModelError, match="adapter_config.json:2: broken JSON"):
        lora_rank(tmp_path)


# ---- offline engine ----------------------------------------------------------------------------


def test_engine_arguments_take_max_lora_rank_from_the_adapter(fake_vllm, rank64_run):
    from nerft.inference.engines.vllm import VLLMEngine

    run = load_run(rank64_run)
    VLLMEngine(resolve_model(run), run.prompt_format())
    assert fake_vllm["llm"] == [{
        "model": run.base_model, "tokenizer": run.base_model, "seed": 0,
        "enable_lora": True, "max_lora_rank": 64, "max_loras": 1,
    }]


def test_generate_sends_training_prompt_ids_greedy_bounded_with_lora_and_regex(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    run = load_run(tiny_run)
    fmt = run.prompt_format()
    engine = VLLMEngine(resolve_model(run), fmt, batch_size=2)
    requests = [ChatRequest.for_text(fmt, text) for text in TEXTS]
    generations = list(engine.generate(requests))

    template = ChatTemplate.load("qwen", engine.llm.get_tokenizer())
    ids = [template.encode(r.system, r.user) for r in requests]
    assert generations == [Generation(f"answer {len(ids[0])}", "stop"), Generation(f"answer {len(ids[1])}", "length"), Generation(f"answer {len(ids[2])}", "stop")]
    classes = fake_vllm["classes"]
    im_end = engine.llm.get_tokenizer().convert_tokens_to_ids("<|im_end|>")
    first, second = fake_vllm["generate"]
    assert first["prompts"] == [{"prompt_token_ids": ids[0]}, {"prompt_token_ids": ids[1]}]
    assert second["prompts"] == [{"prompt_token_ids": ids[2]}]
    assert first["params"][0] == classes.SamplingParams(
        temperature=0.0,
        max_tokens=16 + len(TEXTS[0]) * 2,
        stop_token_ids=[im_end],
        skip_special_tokens=True,
        structured_outputs=classes.StructuredOutputsParams(regex=output_regex(fmt)),
    )
    assert first["lora_request"] == classes.LoRARequest("nerft", 1, str(tiny_run))
    assert first["use_tqdm"] is False


def test_seed_format_asks_for_its_json_schema(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    fmt = get_format("seed")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt)
    params = engine.sampling_params(ChatRequest.for_text(fmt, TEXTS[0]))
    assert params.kwargs["structured_outputs"] == fake_vllm["classes"].StructuredOutputsParams(json=output_json_schema(fmt))
    assert params.kwargs["max_tokens"] == 16 + len(TEXTS[0]) * 4


def test_older_vllm_gets_guided_decoding_params(fake_vllm, tiny_run, monkeypatch):
    from nerft.inference.engines.vllm import VLLMEngine

    class GuidedDecodingParams(Recorded):
        pass

    old = types.ModuleType("vllm.sampling_params")
    old.GuidedDecodingParams = GuidedDecodingParams
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", old)
    fmt = get_format("compact")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt)
    params = engine.sampling_params(ChatRequest.for_text(fmt, TEXTS[0]))
    assert params.kwargs["guided_decoding"] == GuidedDecodingParams(regex=output_regex(fmt))
    assert "structured_outputs" not in params.kwargs


def test_no_structured_output_when_turned_off(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    fmt = get_format("compact")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt, structured=False)
    assert "structured_outputs" not in engine.sampling_params(ChatRequest.for_text(fmt, TEXTS[0])).kwargs


def test_without_vllm_the_engine_says_what_to_install(tiny_run, monkeypatch):
    from nerft.errors import EnvironmentProblem
    from nerft.inference.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(EnvironmentProblem, match="the vllm engine needs vLLM"):
        VLLMEngine(resolve_model(load_run(tiny_run)), get_format("compact"))


# ---- output constraints ------------------------------------------------------------------------


def test_compact_regex_accepts_what_training_taught_and_nothing_else():
    regex = re.compile(output_regex(get_format("compact")))
    fmt = get_format("compact")
    for answer in ["无", "name:孙丽", "name:孙丽\naddress:南京市鼓楼区", fmt.render_output([("company", "京东"), ("company", "沃尔玛")])]:
        assert regex.fullmatch(answer), answer
    for answer in ["", "公司:京东", "name:", "name:孙丽\n", "无\nname:孙丽", "name 孙丽"]:
        assert not regex.fullmatch(answer), answer


def test_seed_schema_lists_the_labels_and_requires_both_keys():
    schema = output_json_schema(get_format("seed", ["name", "book"]))
    assert schema == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["name", "book"]}, "text": {"type": "string", "minLength": 1}},
            "required": ["label", "text"],
            "additionalProperties": False,
        },
    }


# ---- servers -----------------------------------------------------------------------------------


def test_vllm_server_command_line(rank64_run):
    run = load_run(rank64_run)
    (rank64_run / "chat_template.jinja").write_text("{{ messages }}")  # LLaMA-Factory saves the training template here
    command = vllm_server_command(run, host="127.0.0.1", port=8001, model_name="ner", api_key="k3y")
    assert command.argv == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", run.base_model, "--host", "127.0.0.1", "--port", "8001",
        "--enable-lora", "--lora-modules", f"ner={rank64_run}", "--max-lora-rank", "64", "--max-loras", "1",
        "--chat-template", str(rank64_run / "chat_template.jinja"),
        "--generation-config", "vllm",
    ]
    assert command.env == {"VLLM_API_KEY": "k3y"}  # not in argv, which is logged
    assert command.model_name == "ner"


def test_vllm_server_for_a_merged_model_serves_it_under_the_name(tiny_run, tmp_path):
    run = load_run(tiny_run)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    run.merged_model = merged
    command = vllm_server_command(run, host="0.0.0.0", port=8000, model_name="ner", max_model_len=2048)
    assert command.argv[3:] == [
        "--model", str(merged), "--host", "0.0.0.0", "--port", "8000", "--served-model-name", "ner",
        "--generation-config", "vllm", "--max-model-len", "2048",
    ]
    assert command.env == {}


def test_llamafactory_vllm_backend_gets_the_adapter_rank(rank64_run):
    command = llamafactory_api_command(load_run(rank64_run), host="127.0.0.1", port=8000, model_name="ner", backend="vllm")
    assert command.config["vllm_max_lora_rank"] == 64
    assert command.config["infer_backend"] == "vllm"
