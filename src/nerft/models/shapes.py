"""The shapes of decoder models (layers, hidden size, ...): from a model's config.json, or known
by name before it is downloaded. The memory estimate and the benchmarks read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nerft.errors import ModelError
from nerft.io import read_json
from nerft.models.download import TINY_MODEL, find_model
from nerft.models.smollm2 import SMOLLM2_MODEL
from nerft.models.tiny import TINY_CONFIG, TINY_VOCAB

MODEL_CONFIG = "config.json"


def read_model_config(folder: str | Path) -> dict:
    """A model folder's config.json (the one reader of it); a `ModelError` naming the file when it
    is missing or broken."""
    return read_json(Path(folder) / MODEL_CONFIG, error=ModelError, what="the model's config")


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the estimate needs (a Qwen2/LLaMA-style decoder)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int | None = None
    attention_bias: bool = True  # Qwen2 has biases on q, k, v

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_linear_params(self) -> int:
        weights = sum(a * b for a, b in self.linear_shapes().values())
        biases = (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        return weights + biases

    def embedding_params(self) -> int:
        """Input embeddings plus lm_head when it is a separate matrix."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def config_json(self) -> dict:
        """The architecture keys of the model's config.json (what `shape_from_config` reads back)."""
        config = {
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied_embeddings,
        }
        return {**config, "head_dim": self.head_dim} if self.head_dim else config

    def params(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.layers * self.layer_linear_params() + self.embedding_params() + norms


def _qwen25(name, layers, hidden, intermediate, heads, kv_heads, vocab, tied):
    return ModelShape(name, layers, hidden, intermediate, heads, kv_heads, vocab, tied)


# From each model's config.json on the Hugging Face Hub / ModelScope (Qwen/Qwen2.5-*-Instruct, the
# base models have the same shapes; Qwen/Qwen3-8B: head_dim 128, no attention biases, untied).
KNOWN_MODELS: dict[str, ModelShape] = {
    shape.name.lower(): shape
    for shape in (
        _qwen25("Qwen2.5-0.5B-Instruct", 24, 896, 4864, 14, 2, 151936, True),
        _qwen25("Qwen2.5-1.5B-Instruct", 28, 1536, 8960, 12, 2, 151936, True),
        _qwen25("Qwen2.5-3B-Instruct", 36, 2048, 11008, 16, 2, 151936, True),
        _qwen25("Qwen2.5-7B-Instruct", 28, 3584, 18944, 28, 4, 152064, False),
        _qwen25("Qwen2.5-14B-Instruct", 48, 5120, 13824, 40, 8, 152064, False),
        ModelShape("Qwen3-8B", 36, 4096, 12288, 32, 8, 151936, False, head_dim=128, attention_bias=False),
        # HuggingFaceTB/SmolLM2-135M-Instruct, nerft:smollm2-135m (a Llama: no attention biases)
        ModelShape("SmolLM2-135M-Instruct", 30, 576, 1536, 9, 3, 49152, True, head_dim=64, attention_bias=False),
    )
}


def resolve_model_shape(model: str) -> ModelShape | None:
    """A local folder's config.json, else a known model by name (`Qwen/Qwen2.5-7B-Instruct`,
    `models/Qwen/Qwen2.5-7B-Instruct`, `qwen2.5-7b-instruct` all name the same); None if unknown."""
    if model == TINY_MODEL:  # built on demand: its shape is known before it is
        return shape_from_config({**TINY_CONFIG, "vocab_size": TINY_VOCAB, "model_type": "qwen2"}, name=model)
    folder = find_model(model, build=False)
    if folder is not None:
        return shape_from_config(read_model_config(folder), name=model, source=str(folder / MODEL_CONFIG))
    if model == SMOLLM2_MODEL:  # converted on first use: its shape is known before it is
        return KNOWN_MODELS["smollm2-135m-instruct"]
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return KNOWN_MODELS.get(name) or KNOWN_MODELS.get(f"{name}-instruct")


REQUIRED_CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


def shape_from_config(config: dict, *, name: str, source: str = "config.json") -> ModelShape:
    """The shape in a model's config.json; a `ModelError` naming `source` and each missing or
    non-numeric key when it is not a decoder's config."""
    text = config.get("text_config") or config  # multimodal configs nest the language model
    if not isinstance(text, dict):
        raise ModelError(f"{source}: text_config: expected a JSON object, found {type(text).__name__}")
    optional = {key: text.get(key) for key in ("num_key_value_heads", "head_dim") if text.get(key) is not None}
    problems = [
        f"{key}: {'missing' if key not in text else f'expected a positive whole number, found {text[key]!r}'}"
        for key, value in {**{key: text.get(key) for key in REQUIRED_CONFIG_KEYS}, **optional}.items()
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    ]
    if problems:
        raise ModelError(f"{source}: not a decoder model's config ({'; '.join(problems)})")
    heads = text["num_attention_heads"]
    return ModelShape(
        name=name,
        layers=text["num_hidden_layers"],
        hidden=text["hidden_size"],
        intermediate=text["intermediate_size"],
        heads=heads,
        kv_heads=text.get("num_key_value_heads") or heads,
        vocab=text["vocab_size"],
        tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        head_dim=text.get("head_dim"),
        attention_bias=text.get("model_type", "qwen2") == "qwen2" or bool(text.get("attention_bias")),
    )
