"""The `vllm` engine: offline `LLM.generate` on a GPU, the adapter applied with a `LoRARequest`.

`max_lora_rank` is the adapter's own rank rounded up to a value vLLM accepts, never vLLM's
default of 16. Prompts go in as token ids encoded by `ChatTemplate`, so they are the prompts of
training; sampling is greedy, bounded per request and stopped at the template's stop tokens.
With `structured=True` decoding is constrained to the output format (a JSON schema for `seed`,
a regular expression for `compact`), through `StructuredOutputsParams` (vLLM >= 0.10.2) or the
older `GuidedDecodingParams`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from nerft.errors import EnvironmentProblem
from nerft.inference.chat import ChatTemplate
from nerft.inference.engines import ChatRequest, Generation, batched
from nerft.inference.source import ModelSource, vllm_max_lora_rank
from nerft.inference.structured import output_constraint
from nerft.prompts import PromptFormat

DEFAULT_BATCH_SIZE = 1024
LORA_NAME = "nerft"


def vllm_engine_args(source: ModelSource) -> dict:
    """Keyword arguments for `vllm.LLM(...)`."""
    args: dict = {"model": source.model, "tokenizer": source.model, "seed": 0}
    if source.adapter is not None:
        args.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(source.lora_rank), max_loras=1)
    return args


def structured_params(fmt: PromptFormat):
    """The structured-output parameters for `SamplingParams`, as (keyword, value)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return "guided_decoding", GuidedDecodingParams(**output_constraint(fmt))
    return "structured_outputs", StructuredOutputsParams(**output_constraint(fmt))


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        source: ModelSource,
        fmt: PromptFormat,
        *,
        batch_size: int | None = None,
        structured: bool = True,
    ):
        try:
            import vllm
        except ImportError:
            raise EnvironmentProblem("the vllm engine needs vLLM", hint="pip install vllm on a CUDA machine, or use --engine hf") from None
        self._vllm = vllm
        self.source = source
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.llm = vllm.LLM(**vllm_engine_args(source))
        self.template = ChatTemplate.load(source.template, self.llm.get_tokenizer())
        # What every request shares, built once: only max_tokens differs between requests.
        self._fixed_params = {"temperature": 0.0, "stop_token_ids": self.template.stop_token_ids, "skip_special_tokens": True}
        if structured:
            key, value = structured_params(fmt)
            self._fixed_params[key] = value
        self.lora_request = None
        if source.adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest(LORA_NAME, 1, str(source.adapter))

    def describe(self) -> dict:
        return self.source.describe(self.name)

    def sampling_params(self, request: ChatRequest):
        return self._vllm.SamplingParams(max_tokens=request.max_new_tokens, **self._fixed_params)

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        for batch in batched(requests, self.batch_size):
            prompts = [{"prompt_token_ids": self.template.encode(r.system, r.user)} for r in batch]
            outputs = self.llm.generate(
                prompts, [self.sampling_params(r) for r in batch], lora_request=self.lora_request, use_tqdm=False
            )
            for output in outputs:
                completion = output.outputs[0]
                yield Generation(completion.text, "length" if completion.finish_reason == "length" else "stop")

    def close(self) -> None:
        del self.llm
