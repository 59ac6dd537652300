"""Real vLLM: the CPU build that scripts/setup.sh installs in .venv-vllm (or vLLM in this Python).

- offline generation (`VLLMEngine`, through vllm_worker.py) with the tiny run's random LoRA adapter:
  the same greedy answers as the hf engine, and the compact regular expression obeyed;
- the learned quick-start run: hf, LLaMA-Factory's API server and vLLM give the same greedy answers
  on the bundled sentences and each scores micro F1 >= 0.9 on the training sentences; the compact
  regex leaves its learned answers unchanged, the seed JSON schema constrains what it writes;
- grounded decoding (on by default): the learned run's grounded answers are the same from hf and
  vLLM, with a confidence for every entity;
- `nerft serve --engine vllm` for the LoRA run: vLLM's OpenAI server with `--enable-lora` and an
  API key (401 without it), scored through `nerft eval --endpoint` (grounded by default, the same
  answers as offline vLLM, confidences from the server's logprobs), stopped by SIGTERM;
- two LoRA runs behind one vLLM server: `/v1/models` lists each with the base as parent, and
  `nerft eval --endpoint URL --model NAME` gives each run the answers and F1 it gets alone.

Each engine and the server start once (a vLLM start takes 15-50 s here); an engine lives for its
class only, so two never hold memory at once. Skipped only where no vLLM is found at all.
"""

from __future__ import annotations

import json
import shutil
import signal

import httpx
import pytest
import regex
from conftest import SAMPLE, start_nerft_serve
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.load import load_records
from nerft.inference.engines import ChatRequest
from nerft.inference.predict import predict_records
from nerft.inference.source import resolve_model
from nerft.inference.structured import output_json_schema, output_regex
from nerft.inference.vllm_env import find_vllm_environment
from nerft.metrics.evaluate import evaluate
from nerft.runfolder import load_run

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT = 300
API_KEY = "test-key-7"
TRAIN = load_records(SAMPLE / "train.jsonl")
BUNDLED = TRAIN + load_records(SAMPLE / "dev.jsonl") + load_records(SAMPLE / "test.jsonl")


@pytest.fixture(scope="session")
def vllm_environment():
    environment = find_vllm_environment()
    if environment is None or environment.vllm is None:
        pytest.skip(
            "no vLLM: vllm does not import here and there is no .venv-vllm/ (scripts/setup.sh makes it on a CPU machine)"
        )
    return environment


def answers_of(engine, fmt, records) -> list[str]:
    return [row["predict"] for row in rows_of(engine, fmt, records)]


def rows_of(engine, fmt, records) -> list[dict]:
    rows: list[dict] = []
    predict_records(records, engine, fmt, sink=rows.append)
    return rows


def hf_answers(run_dir, records) -> list[str]:
    from nerft.inference.engines.hf import HFEngine

    run = load_run(run_dir)
    engine = HFEngine(resolve_model(run), batch_size=8)
    try:
        return answers_of(engine, run.prompt_format(), records)
    finally:
        engine.close()


def micro_f1(records, answers) -> float:
    return evaluate(records, answers).clue.micro.f1


def json_prefix_pattern(fmt) -> str:
    """Everything the seed schema accepts (JSON whitespace anywhere between tokens), as a regex
    whose partial matches are the prefixes of an accepted answer."""
    ws = r"[ \t\n\r]*"
    string = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})+"'
    label = '"(?:' + "|".join(fmt.labels) + ')"'
    item = rf"\{{{ws}\"label\"{ws}:{ws}{label}{ws},{ws}\"text\"{ws}:{ws}{string}{ws}\}}"
    return rf"{ws}\[{ws}(?:{item}(?:{ws},{ws}{item})*)?{ws}\]{ws}"


# ---- offline engine, LoRA adapter ------------------------------------------------------------


class TestOfflineLoRA:
    @pytest.fixture(scope="class")
    @classmethod
    def lora_engine(cls, tiny_run, vllm_environment):
        from nerft.inference.engines.vllm import VLLMEngine

        run = load_run(tiny_run)
        engine = VLLMEngine(
            resolve_model(run), run.prompt_format(), structured=False, environment=vllm_environment, merge_adapter=False
        )
        yield engine
        engine.close()

    def test_settings_are_derived_from_the_run_and_this_cpu(self, lora_engine, vllm_environment):
        llm = lora_engine.settings.llm
        assert (llm["enable_lora"], llm["max_lora_rank"], llm["max_model_len"]) == (
            True,
            8,
            2048,
        )  # rank 8 adapter; no cutoff_len
        if vllm_environment.cpu:
            assert (llm["dtype"], llm["enforce_eager"], llm["distributed_executor_backend"]) == ("float32", True, "uni")

    def test_lora_answers_are_the_hf_engine_s(self, lora_engine, tiny_run, one_thread):
        fmt = load_run(tiny_run).prompt_format()
        by_vllm = answers_of(lora_engine, fmt, BUNDLED)
        assert by_vllm == hf_answers(tiny_run, BUNDLED)
        assert (
            len(set(by_vllm)) > len(BUNDLED) // 2
        )  # the random adapter makes answers differ: the comparison means something

    def test_compact_regex_holds_every_answer_to_the_run_s_labels(self, lora_engine, tiny_run):
        fmt = load_run(tiny_run).prompt_format()
        pattern = output_regex(fmt)
        prompts = [
            {**lora_engine.prompt(ChatRequest.for_text(fmt, r.text)), "structured": {"regex": pattern}} for r in BUNDLED
        ]
        answers = lora_engine.generator.generate(prompts)
        for answer in answers:
            text = answer["text"]
            if answer["finish_reason"] == "stop":
                assert regex.fullmatch(pattern, text), text
            else:  # cut at max_tokens: still on its way to an accepted answer
                assert regex.fullmatch(pattern, text, partial=True), text
            assert text == "无" or text.split(":", 1)[0] in fmt.labels, text


class TestOfflineMergedOnCpu:
    """The default on a CPU: the adapter merged once into a cached copy of the base (vLLM's LoRA
    path there is 4.7x slower), with the adapter's answers."""

    @pytest.fixture(scope="class")
    @classmethod
    def merged_engine(cls, tiny_run, vllm_environment, tmp_path_factory):
        from nerft.inference.engines.vllm import VLLMEngine

        if not vllm_environment.cpu:
            pytest.skip("merging is the CPU default only")
        run = load_run(tiny_run)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NERFT_CACHE", str(tmp_path_factory.mktemp("merge-cache")))
            engine = VLLMEngine(resolve_model(run), run.prompt_format(), structured=False, environment=vllm_environment)
        yield engine
        engine.close()

    def test_the_engine_loads_the_merged_copy_and_answers_like_hf(self, merged_engine, tiny_run, one_thread):
        llm = merged_engine.settings.llm
        assert "enable_lora" not in llm and "/merged/" in llm["model"]
        assert merged_engine.describe()["adapter"] == str(tiny_run)  # predictions still name the run's adapter
        fmt = load_run(tiny_run).prompt_format()
        assert answers_of(merged_engine, fmt, BUNDLED) == hf_answers(tiny_run, BUNDLED)


# ---- the learned run: three engines, one answer ----------------------------------------------


class TestLearnedRun:
    @pytest.fixture(scope="class")
    @classmethod
    def learned_copy(cls, learned_run, tmp_path_factory):
        """A copy to write into (the LLaMA-Factory server writes its YAML into the run folder)."""
        copy = tmp_path_factory.mktemp("learned-copy") / "run"
        shutil.copytree(learned_run, copy, ignore=shutil.ignore_patterns("checkpoint-*", "eval"))
        return copy

    @pytest.fixture(scope="class")
    @classmethod
    def learned_engine(cls, learned_copy, vllm_environment):
        from nerft.inference.engines.vllm import VLLMEngine

        # Unconstrained, like the hf engine and the server: the comparison is of engines alone
        # (weights, prompt, greedy decoding); the constraints are tested on their own below.
        run = load_run(learned_copy)
        engine = VLLMEngine(
            resolve_model(run),
            run.prompt_format(),
            structured=False,
            cutoff_len=run.cutoff_len,
            environment=vllm_environment,
        )
        yield engine
        engine.close()

    @pytest.fixture(scope="class")
    @classmethod
    def by_vllm(cls, learned_engine, learned_copy):
        return rows_of(learned_engine, load_run(learned_copy).prompt_format(), BUNDLED)

    def test_max_model_len_comes_from_the_run_s_cutoff_len(self, learned_engine, learned_copy):
        run = load_run(learned_copy)
        needed = run.cutoff_len + run.prompt_format().max_new_tokens("x" * run.cutoff_len)
        assert learned_engine.settings.max_model_len == -(-needed // 256) * 256

    def test_hf_llamafactory_server_and_vllm_answer_alike_and_learned_the_training_sentences(
        self, by_vllm, learned_copy, one_thread
    ):
        from nerft.inference.engines.openai import OpenAIEngine
        from nerft.serving.commands import llamafactory_api_command
        from nerft.serving.server import free_port, running_server

        run = load_run(learned_copy)
        fmt = run.prompt_format()
        vllm_answers = [row["predict"] for row in by_vllm]
        port = free_port()
        command = llamafactory_api_command(run, host="127.0.0.1", port=port, model_name="learned")
        command.env["OMP_NUM_THREADS"] = "1"
        with running_server(command, host="127.0.0.1", port=port, startup_timeout=STARTUP_TIMEOUT) as server:
            client = OpenAIEngine(server.url, model=server.model, stop=("<|im_end|>",))
            try:
                server_answers = answers_of(client, fmt, BUNDLED)
            finally:
                client.close()
        hf = hf_answers(learned_copy, BUNDLED)
        assert vllm_answers == hf
        assert server_answers == hf
        train = len(TRAIN)
        for answers in (hf, server_answers, vllm_answers):
            assert micro_f1(TRAIN, answers[:train]) >= 0.9

    def test_grounded_vllm_answers_like_grounded_hf_with_confidences(self, learned_copy, vllm_environment, one_thread):
        from nerft.inference.engines.hf import HFEngine
        from nerft.inference.engines.vllm import VLLMEngine

        run = load_run(learned_copy)
        fmt = run.prompt_format()
        hf = HFEngine(resolve_model(run), fmt, batch_size=8, grounded=True)
        try:
            by_hf = rows_of(hf, fmt, BUNDLED)
        finally:
            hf.close()
        engine = VLLMEngine(
            resolve_model(run), fmt, cutoff_len=run.cutoff_len, environment=vllm_environment, grounded=True
        )
        try:
            by_vllm = rows_of(engine, fmt, BUNDLED)
        finally:
            engine.close()
        # The sentences the run learned get the same answers. On the sentences it never saw, a
        # random tiny model's logits are near ties that two float implementations break apart, and
        # hf forbids a repeated item where vLLM's regular expression cannot: only grounding holds.
        learned = len(TRAIN)
        assert [row["predict"] for row in by_vllm[:learned]] == [row["predict"] for row in by_hf[:learned]]
        for rows in (by_hf, by_vllm):
            assert sum(len(row["dropped"]) for row in rows) == 0
            assert all(e["text"] in row["text"] for row in rows for e in row["entities"])
            assert all(0.0 <= e["confidence"] <= 1.0 for row in rows for e in row["entities"])
        assert micro_f1(TRAIN, [row["predict"] for row in by_vllm[: len(TRAIN)]]) >= 0.9

    def test_every_answer_to_a_training_sentence_ends_at_the_stop_token(self, by_vllm):
        assert {row["finish_reason"] for row in by_vllm[: len(TRAIN)]} == {"stop"}

    def test_compact_regex_leaves_the_learned_answers_to_training_sentences_as_they_are(
        self, learned_engine, learned_copy, by_vllm
    ):
        fmt = load_run(learned_copy).prompt_format()
        prompts = [
            {**learned_engine.prompt(ChatRequest.for_text(fmt, r.text)), "structured": {"regex": output_regex(fmt)}}
            for r in TRAIN
        ]
        constrained = [
            learned_engine.decode(answer["token_ids"]) for answer in learned_engine.generator.generate(prompts)
        ]
        assert constrained == [row["predict"] for row in by_vllm[: len(TRAIN)]]

    def test_seed_json_schema_constrains_what_the_model_writes(self, learned_engine, learned_copy, by_vllm):
        # The learned run was taught compact answers (`name:王立明`); under the seed schema every
        # answer must instead be (a prefix of) a JSON list of {"label", "text"} with the run's labels.
        fmt = load_run(learned_copy).prompt_format()
        schema = output_json_schema(fmt)
        pattern = json_prefix_pattern(fmt)
        prompts = [
            {**learned_engine.prompt(ChatRequest.for_text(fmt, r.text)), "structured": {"json": schema}} for r in TRAIN
        ]
        answers = learned_engine.generator.generate(prompts)
        assert not any(row["predict"].lstrip().startswith("[") for row in by_vllm[: len(TRAIN)])
        for answer in answers:
            text = answer["text"]
            assert text.lstrip().startswith("["), text
            assert regex.fullmatch(pattern, text, partial=True), text
            if answer["finish_reason"] == "stop":
                assert all(item["label"] in fmt.labels and item["text"] for item in json.loads(text))


# ---- nerft serve --engine vllm: the OpenAI server with the LoRA module -----------------------


@pytest.fixture(scope="module")
def vllm_server(tiny_run, vllm_environment, tmp_path_factory):
    """`nerft serve RUN --engine vllm --api-key K` (the real command), until SIGTERM."""
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    args = [str(tiny_run), "--engine", "vllm", "--port", "0", "--api-key", API_KEY]
    process, info = start_nerft_serve(args, log, timeout=STARTUP_TIMEOUT)
    info = {**info, "process": process, "log": log}
    yield info
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def test_served_lora_module_needs_the_api_key(vllm_server, tiny_run, vllm_environment):
    url = vllm_server["url"]
    assert vllm_server["model"] == tiny_run.name
    assert httpx.get(f"{url}/models", trust_env=False).status_code == 401
    models = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False).json()
    assert {entry["id"] for entry in models["data"]} == {
        tiny_run.name,
        load_run(tiny_run).base_model,
    }  # the LoRA module and its base
    log = vllm_server["log"].read_text()
    assert f"{vllm_environment.python} -m vllm.entrypoints.openai.api_server" in log
    assert "--enable-lora" in log and "--max-lora-rank 8" in log and API_KEY not in log


def test_eval_endpoint_scores_the_served_lora_and_it_answers_like_the_hf_engine(
    vllm_server, tiny_run, tmp_path, one_thread
):
    out_dir = tmp_path / "eval"
    dev = SAMPLE / "dev.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--endpoint",
            vllm_server["url"],
            "--run",
            str(tiny_run),
            "--api-key",
            API_KEY,
            "--gold",
            str(dev),
            "--out-dir",
            str(out_dir),
            "--no-grounded",  # the engines compared alone; grounded answers are the next test's
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out_dir / "report.json").read_text())
    assert report["records"] == 9 and report["prediction"]["predicted"] == 9
    assert report["prediction"]["engine"]["model"] == tiny_run.name
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["predict"] for row in rows] == hf_answers(tiny_run, load_records(dev))


def test_served_answers_are_grounded_by_default_like_offline_vllm_with_confidences(
    vllm_server, tiny_run, tmp_path, vllm_environment, one_thread
):
    from nerft.inference.engines.vllm import VLLMEngine
    from nerft.inference.grounding import AnswerGrammar

    dev = SAMPLE / "dev.jsonl"
    out_dir = tmp_path / "eval"
    args = ["eval", "--endpoint", vllm_server["url"], "--run", str(tiny_run), "--api-key", API_KEY]
    result = CliRunner().invoke(app, [*args, "--gold", str(dev), "--out-dir", str(out_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads((out_dir / "report.json").read_text())
    assert report["prediction"]["engine"]["grounded"] is True  # the server is vLLM's: grounded by default
    assert report["in_text"]["not_in_text"] == 0
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    run = load_run(tiny_run)
    fmt = run.prompt_format()
    for row in rows:
        if row["finish_reason"] == "stop":
            assert AnswerGrammar(fmt, row["text"]).complete(row["predict"].encode()), row["predict"]
        assert all(0.0 <= e["confidence"] <= 1.0 for e in row["entities"]), row  # from the server's logprobs
    # the random adapter's answers, grounded, are offline vLLM's grounded answers
    engine = VLLMEngine(
        resolve_model(run), fmt, environment=vllm_environment, merge_adapter=False, grounded=True, structured=False
    )
    try:
        offline = answers_of(engine, fmt, load_records(dev))
    finally:
        engine.close()
    assert [row["predict"] for row in rows] == offline


def test_sigterm_stops_the_server_and_its_vllm_child(vllm_server):
    process = vllm_server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(vllm_server["url"] + "/models", trust_env=False, timeout=5)
    assert "server stopped" in vllm_server["log"].read_text()


# ---- nerft serve A B --engine vllm: two LoRA runs on one base ---------------------------------


@pytest.fixture(scope="module")
def two_run_server(tiny_run, other_tiny_run, vllm_environment, tmp_path_factory):
    """`nerft serve A B --engine vllm` (the real command): the two tiny runs' adapters on their one base."""
    log = tmp_path_factory.mktemp("vllm-serve-two") / "serve.log"
    args = [str(tiny_run), str(other_tiny_run), "--engine", "vllm", "--port", "0"]
    process, info = start_nerft_serve(args, log, timeout=STARTUP_TIMEOUT)
    yield {**info, "process": process, "log": log}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_two_runs_behind_one_server_answer_under_their_names_as_each_does_alone(
    two_run_server, tiny_run, other_tiny_run, tmp_path, one_thread
):
    url = two_run_server["url"]
    names = [tiny_run.name, other_tiny_run.name]
    assert two_run_server["models"] == names
    base = load_run(tiny_run).base_model
    listed = httpx.get(f"{url}/models", trust_env=False).json()["data"]
    assert {entry["id"]: entry.get("parent") for entry in listed} == {base: None, names[0]: base, names[1]: base}
    assert "--max-loras 2" in two_run_server["log"].read_text()

    dev = SAMPLE / "dev.jsonl"
    gold = load_records(dev)
    answers = {}
    for run_dir in (tiny_run, other_tiny_run):
        out_dir = tmp_path / run_dir.name
        args = ["eval", "--endpoint", url, "--model", run_dir.name, "--run", str(run_dir), "--gold", str(dev)]
        # --no-grounded: the served runs compared with the hf engine alone, which answers as each run
        # served alone does (test_eval_endpoint_scores_the_served_lora_and_it_answers_like_the_hf_engine)
        result = CliRunner().invoke(app, [*args, "--out-dir", str(out_dir), "--no-grounded"])
        assert result.exit_code == 0, result.output
        report = json.loads((out_dir / "report.json").read_text())
        assert report["prediction"]["engine"]["model"] == run_dir.name
        rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
        answers[run_dir.name] = [row["predict"] for row in rows]
        alone = hf_answers(run_dir, gold)
        assert answers[run_dir.name] == alone
        assert report["micro"]["f1"] == micro_f1(gold, alone)
    assert answers[names[0]] != answers[names[1]]  # each request got its own run's adapter

    result = CliRunner().invoke(app, ["eval", "--endpoint", url, "--run", str(tiny_run), "--gold", str(dev)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"nerft: error: {url}/models lists 3 models ({base}, {names[0]}, {names[1]}) (choose one with --model)"
    )
