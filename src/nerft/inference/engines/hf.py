"""The `hf` engine: transformers generation, batched with left padding; runs on CPU or one GPU.

It loads the weights the way `llamafactory-cli api` does, so both answer alike: the tokenizer
of the base model, the LoRA adapter merged into the base weights (`merge_and_unload`), float32
on CPU and bfloat16 (or float16) on CUDA. Each answer is cut at its own request's
`max_new_tokens` and at the first stop token, then decoded with special tokens skipped: in a
batch, every row reads exactly as it would alone.

Batches are made by length: the engine reads `BUCKET_BATCHES` batches' worth of requests ahead,
sorts them by prompt length, so each batch pads its rows to nearly the same width, and yields the
answers in request order again.

Prompt lookup (transformers' `prompt_lookup_num_tokens`, assisted decoding with n-grams of the
prompt as the draft): an NER answer mostly copies spans of its sentence, so the drafted tokens are
often accepted, and greedy answers are identical to plain decoding. transformers runs it for one
sequence at a time only ("assisted generate is only supported for batch_size = 1"), so it is on
with batch size 1 (unless `speculation=False`) and never in batches; batching is the faster of
the two (`scripts/bench_infer.py`, docs/PERFORMANCE.md), so the default stays batched.
Four drafted tokens per step, not transformers' example of 10: an entity is a short copy (2-5
tokens), so more drafts are rarely accepted (forward passes per answer 13.3 with 4, 13.1 with 10,
18.4 without, on the learned 28M-parameter model) and on a CPU each costs compute to verify:
1.14-1.22x faster with 4, 1.01-1.14x with 10 (docs/PERFORMANCE.md section 7). vLLM's n-gram
speculation drafts 4 too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from nerft.errors import ModelError
from nerft.inference.chat import ChatTemplate
from nerft.inference.engines import ChatRequest, Generation, batched
from nerft.inference.source import ModelSource

DEFAULT_BATCH_SIZE = 8
BUCKET_BATCHES = 16  # batches read ahead and sorted by length: fewer pad tokens, a bounded read-ahead
PROMPT_LOOKUP_TOKENS = 4  # drafted tokens per step: see below


class HFEngine:
    name = "hf"

    def __init__(self, source: ModelSource, *, batch_size: int | None = None, speculation: bool | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source = source
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.speculation = speculation
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source.model)
            model = AutoModelForCausalLM.from_pretrained(source.model, dtype="auto")
            model = model.to(self._dtype(model.config))
        except OSError as exc:
            raise ModelError(f"cannot load model {source.model}: {str(exc).splitlines()[0]}") from None
        if source.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(source.adapter)).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template = ChatTemplate.load(source.template, self.tokenizer)
        self.stop_ids = self.template.stop_token_ids

    def _dtype(self, config):
        """LLaMA-Factory's choice at inference (`infer_optim_dtype`): bf16 for a bf16 model where
        the GPU has it, else fp16 on a GPU, else fp32."""
        import torch

        if self.device != "cuda":
            return torch.float32
        if torch.cuda.is_bf16_supported() and getattr(config, "dtype", None) in (torch.bfloat16, None):
            return torch.bfloat16
        return torch.float16

    def describe(self) -> dict:
        return self.source.describe(self.name)  # prompt lookup changes speed, not answers: not recorded

    def encode(self, request: ChatRequest) -> list[int]:
        return self.template.encode(request.system, request.user)

    @property
    def prompt_lookup(self) -> bool:
        """Whether answers are decoded with prompt lookup now (batch size 1 only, see above)."""
        return self.speculation is not False and self.batch_size == 1

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        for window in batched(requests, self.batch_size * BUCKET_BATCHES):
            prompts = [self.encode(request) for request in window]
            order = sorted(range(len(window)), key=lambda i: len(prompts[i]))
            answers: dict[int, Generation] = {}
            for indices in batched(order, self.batch_size):
                generations = self._generate_batch([window[i] for i in indices], [prompts[i] for i in indices])
                answers.update(zip(indices, generations))
            yield from (answers[i] for i in range(len(window)))

    def _generate_batch(self, batch: list[ChatRequest], prompts: list[list[int]]) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device
        )
        # A fresh GenerationConfig, as LLaMA-Factory builds one: the model's generation_config.json
        # (Qwen2.5-Instruct's asks for repetition_penalty 1.05 and sampling) must not apply.
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max(request.max_new_tokens for request in batch),
            eos_token_id=self.stop_ids,
            pad_token_id=pad,
            prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS if self.prompt_lookup and len(batch) == 1 else None,
        )
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        generations = []
        for request, row in zip(batch, output[:, width:].tolist()):
            row = row[: request.max_new_tokens]
            stop = next((i for i, token in enumerate(row) if token in self.stop_ids), None)
            tokens = row if stop is None else row[:stop]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)
            generations.append(Generation(text, "length" if stop is None else "stop"))
        return generations

    def close(self) -> None:
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
