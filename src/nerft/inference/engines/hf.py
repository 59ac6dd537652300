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
from nerft.inference.grounding import AnswerGrammar, token_bytes_table
from nerft.inference.source import ModelSource
from nerft.prompts import PromptFormat

DEFAULT_BATCH_SIZE = 8
BUCKET_BATCHES = 16  # batches read ahead and sorted by length: fewer pad tokens, a bounded read-ahead
PROMPT_LOOKUP_TOKENS = 4  # drafted tokens per step: see below


class HFEngine:
    name = "hf"

    def __init__(
        self,
        source: ModelSource,
        fmt: PromptFormat | None = None,
        *,
        batch_size: int | None = None,
        speculation: bool | None = None,
        grounded: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source = source
        self.fmt = fmt
        self.grounded = grounded and fmt is not None
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
        self.token_bytes = token_bytes_table(self.tokenizer)

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
        # prompt lookup changes speed, not answers: not recorded
        return {**self.source.describe(self.name), "grounded": self.grounded}

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
        grammars = [AnswerGrammar(self.fmt, request.text) if self.grounded else None for request in batch]
        decoding = GroundedDecoding(grammars, width, self.token_bytes, self.stop_ids)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=[decoding],
            )
        generations = []
        for index, (request, row) in enumerate(zip(batch, output[:, width:].tolist())):
            row = row[: request.max_new_tokens]
            stop = next((i for i, token in enumerate(row) if token in self.stop_ids), None)
            tokens = row if stop is None else row[:stop]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)
            answered = row if stop is None else row[: stop + 1]
            generations.append(
                Generation(text, "length" if stop is None else "stop", decoding.token_logprobs(index, answered))
            )
        return generations

    def close(self) -> None:
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class GroundedDecoding:
    """A logits processor for greedy decoding: it picks each row's next token, and remembers the
    token's log-probability under the model's own (unconstrained) distribution.

    With a grammar (`AnswerGrammar`, see nerft.inference.grounding) the pick is the best-scoring
    token the grammar allows after the answer so far: an end token only where the answer is
    complete, any other token only when its bytes extend a grounded answer. The best
    `FIRST_CANDIDATES` are tried first, then the rest in order of score; when no token at all is
    allowed, or the best one would go on after an item written twice (a loop), the answer ends.
    Without a grammar the pick is the model's own greedy choice. Every other token's score is set
    to -inf, so greedy search takes the pick.

    Under prompt lookup (assisted decoding) the processor is called once per drafted position: the
    log-probabilities are kept by position, so the draft that is kept has its own.
    """

    FIRST_CANDIDATES = 32

    def __init__(self, grammars: list, width: int, token_bytes: list, stop_ids: list[int]):
        self.grammars = grammars
        self.width = width
        self.token_bytes = token_bytes
        self.stop_ids = frozenset(stop_ids)
        self.first_stop = stop_ids[0] if stop_ids else None
        self.picked: list[dict[int, tuple[int, float]]] = [{} for _ in grammars]

    def __call__(self, input_ids, scores):
        import torch

        if bool((scores == scores.flatten()[0]).all()):
            # transformers' prompt lookup asks whether a drafted token is allowed by calling the
            # processors on uniform fake logits; every draft is let through, and verifying it (a
            # real call) keeps only what the grammar allows
            return scores
        logsumexp = torch.logsumexp(scores.float(), dim=-1)
        generated = input_ids[:, self.width :].tolist()
        for row, tokens in enumerate(generated):
            if self.stop_ids.intersection(tokens):
                continue  # answered: the rest of the row is padding
            grammar = self.grammars[row]
            if grammar is None:
                token = int(scores[row].argmax())
            else:
                answer = b"".join(self.token_bytes[t] or b"" for t in tokens if t < len(self.token_bytes))
                token = self._pick(grammar, answer, scores[row])
                kept = scores[row, token].clone()
                scores[row] = float("-inf")
                scores[row, token] = kept
            self.picked[row][len(tokens)] = (token, float(scores[row, token].float() - logsumexp[row]))
        return scores

    def _pick(self, grammar, answer: bytes, scores) -> int:
        import torch

        complete = grammar.complete(answer)

        def allowed(token: int) -> bool:
            if token in self.stop_ids:
                return complete
            data = self.token_bytes[token] if token < len(self.token_bytes) else None
            return bool(data) and grammar.allows(answer + data)

        first = torch.topk(scores, min(self.FIRST_CANDIDATES, scores.shape[-1])).indices.tolist()
        if allowed(first[0]):
            return first[0]
        top = self.token_bytes[first[0]] if first[0] < len(self.token_bytes) else None
        if complete and top and self.first_stop is not None and grammar.repeats(answer + top):
            # the model goes on after an item it has already written: a loop, which ends here
            # (made to write something else instead, it wrote new, wrong entities)
            return self.first_stop
        for token in first[1:]:
            if allowed(token):
                return token
        for token in torch.argsort(scores, descending=True)[len(first) :].tolist():
            if allowed(token):
                return token
        return self.first_stop if self.first_stop is not None else first[0]

    def token_logprobs(self, row: int, tokens: list[int]) -> tuple[tuple[bytes, float], ...] | None:
        """The answer's tokens as (bytes, log-probability), end token b""; None if one is missing."""
        picked = self.picked[row]
        pairs = []
        for position, token in enumerate(tokens):
            kept = picked.get(position)
            if kept is None or kept[0] != token:
                return None
            data = b"" if token in self.stop_ids else (self.token_bytes[token] or b"")
            pairs.append((data, kept[1]))
        return tuple(pairs)
