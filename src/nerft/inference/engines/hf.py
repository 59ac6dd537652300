"""The `hf` engine: transformers generation, batched with left padding; runs on CPU or one GPU.

It loads the weights the way `llamafactory-cli api` does, so both answer alike: the tokenizer
of the base model, the LoRA adapter merged into the base weights (`merge_and_unload`), float32
on CPU and bfloat16 (or float16) on CUDA. Each answer is cut at its own request's
`max_new_tokens` and at the first stop token, then decoded with special tokens skipped: in a
batch, every row reads exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from nerft.errors import ModelError
from nerft.inference.chat import ChatTemplate
from nerft.inference.engines import ChatRequest, Generation, batched
from nerft.inference.source import ModelSource

DEFAULT_BATCH_SIZE = 8


class HFEngine:
    name = "hf"

    def __init__(self, source: ModelSource, *, batch_size: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source = source
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
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
        return self.source.describe(self.name)

    def encode(self, request: ChatRequest) -> list[int]:
        return self.template.encode(request.system, request.user)

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        for batch in batched(requests, self.batch_size):
            yield from self._generate_batch(batch)

    def _generate_batch(self, batch: list[ChatRequest]) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        prompts = [self.encode(request) for request in batch]
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device)
        # A fresh GenerationConfig, as LLaMA-Factory builds one: the model's generation_config.json
        # (Qwen2.5-Instruct's asks for repetition_penalty 1.05 and sampling) must not apply.
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max(request.max_new_tokens for request in batch),
            eos_token_id=self.stop_ids,
            pad_token_id=pad,
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
