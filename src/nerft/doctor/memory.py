"""How much memory a training run needs: model shapes, the training plan, and the estimate.

The estimate adds up what one training process holds at its peak (per GPU: LLaMA-Factory's
data-parallel training puts a full copy on each):

    weights      P_quantized * q + P_other * w
                 w = 2 bytes (bf16/fp16 on a GPU) or 4 (float32 on CPU); q = w unquantized,
                 0.516 for 4-bit NF4 (4 bits + 0.127 bits of double-quantized constants, QLoRA
                 paper, Dettmers et al. 2023, section 3), 1.0 for 8-bit. bitsandbytes quantizes the
                 decoder's linear layers; embeddings, lm_head and norms stay at w.
    trainable    T * 16 bytes: LLaMA-Factory upcasts trainable parameters to float32 (4), plus
                 their float32 gradient (4) and Adam's two moments (8); 8 bytes with pure_bf16.
                 Full fine-tuning trains every parameter, so its weights are counted here instead
                 (7B: 16 * 7.6e9 = 122 GB, LLaMA-Factory's README says 120 GB).
                 LoRA: T = r * sum(in + out) over the targeted linear layers of every decoder layer
                 (Qwen2.5-7B, r=8, all: 20,185,088, what LLaMA-Factory prints).
    activations  per token and decoder layer, the tensors autograd saves (method of Korthikanti et
                 al. 2022, "Reducing Activation Recomputation in Large Transformer Models", counted
                 for a Qwen2/LLaMA layer with SwiGLU and no dropout), in elements:
                 2h (two RMSNorm inputs) + 2h (their outputs, inputs of the projections)
                 + 2h + 2kv (q, k, v and the attention output kept by SDPA/FlashAttention)
                 + 4i (gate, SiLU(gate), up, and their product, input of down_proj)
                 = 6h + 2kv + 4i; eager attention adds 2 * heads * s (scores and softmax).
                 Times w bytes, times b*s tokens: all layers without gradient checkpointing;
                 with it (LLaMA-Factory's default) one layer's input per layer (h) plus one
                 layer recomputed during the backward pass.
    logits       b*s*vocab * (w + 12): the logits, their float32 copy for the loss, the
                 log-probabilities cross-entropy saves and their gradient.
    overhead     1 GiB (CUDA context and cuBLAS/cuDNN workspaces, or the process itself on CPU),
                 then 10% on top of the sum for allocator fragmentation.

Sequences are counted at `cutoff_len`, the longest a batch can be: a worst case, since batches are
padded to their longest example only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
FOUR_BIT_BYTES = 0.516  # 4 bits + 0.127 bits of double-quantized block constants (QLoRA, section 3)
EIGHT_BIT_BYTES = 1.0
OPTIMIZER_BYTES = 16  # float32 weight + float32 gradient + Adam m and v
PURE_BF16_OPTIMIZER_BYTES = 8
FIXED_OVERHEAD = 1 * GIB
FRAGMENTATION = 0.10
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    )
}


def resolve_model_shape(model: str) -> ModelShape | None:
    """A local folder's config.json, else a known model by name (`Qwen/Qwen2.5-7B-Instruct`,
    `models/Qwen/Qwen2.5-7B-Instruct`, `qwen2.5-7b-instruct` all name the same); None if unknown."""
    if model.startswith("nerft:tiny"):  # built on demand by nerft.models.tiny
        from nerft.models.tiny import TINY_CONFIG

        return shape_from_config({**TINY_CONFIG, "vocab_size": 1024, "model_type": "qwen2"}, name=model)
    folder = local_model_dir(model)
    if folder is not None:
        from nerft.errors import ModelError
        from nerft.io import read_json

        config_path = folder / "config.json"
        return shape_from_config(
            read_json(config_path, error=ModelError, what="the model's config"), name=model, source=str(config_path)
        )
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return KNOWN_MODELS.get(name) or KNOWN_MODELS.get(f"{name}-instruct")


def local_model_dir(model: str) -> Path | None:
    """The folder holding `model`'s config.json: the path itself, or nerft's model cache for a hub id."""
    from nerft.models.download import is_hub_id, model_cache_path

    candidates = [Path(model).expanduser()] + ([model_cache_path(model)] if is_hub_id(model) else [])
    return next((folder for folder in candidates if (folder / "config.json").is_file()), None)


REQUIRED_CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


def shape_from_config(config: dict, *, name: str, source: str = "config.json") -> ModelShape:
    """The shape in a model's config.json; a `ModelError` naming `source` and each missing or
    non-numeric key when it is not a decoder's config."""
    from nerft.errors import ModelError

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


@dataclass
class TrainingPlan:
    """The settings of a training config that decide where it can run (LLaMA-Factory's names and
    defaults)."""

    model: str
    finetuning_type: str = "lora"
    quantization_bit: int | None = None
    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    cutoff_len: int = 2048
    per_device_train_batch_size: int = 8  # transformers' TrainingArguments default
    gradient_checkpointing: bool = True  # LLaMA-Factory enables it unless disable_gradient_checkpointing
    lora_rank: int = 8
    lora_target: str = "all"
    freeze_trainable_layers: int = 2
    cutoff_auto: bool = False  # cutoff_len was "auto" (measured at launch): sized on CLUENER's lengths
    sequence_note: str = ""  # how cutoff_len and the batch size were sized, when cutoff_auto
    packing: bool = False  # packing or neat_packing: a micro-batch is one sequence of the examples
    flash_attn: str = "auto"
    enable_liger_kernel: bool = False
    deepspeed: str | None = None  # zero2, zero3 or a DeepSpeed JSON file
    nerft_config: bool = False  # a nerft config: `nerft train` runs it, and stops where LLaMA-Factory would only warn
    source: str = ""  # the config file it came from
    run_plan: object | None = field(
        default=None, repr=False, compare=False
    )  # nerft.training.plan.RunPlan of a nerft config

    @property
    def requirements(self):
        """What it needs of a machine, as `nerft.training.plan.can_run_here` reads it."""
        from nerft.training.plan import Requirements

        return Requirements(
            bf16=self.bf16,
            fp16=self.fp16,
            pure_bf16=self.pure_bf16,
            flash_attn=self.flash_attn,
            liger=self.enable_liger_kernel,
            deepspeed=bool(self.deepspeed),
            quantization_bit=self.quantization_bit,
            nerft_config=self.nerft_config,
            source=self.source,
        )

    @property
    def mixed_precision(self) -> list[str]:
        """The precision flags that are on: bf16, fp16, pure_bf16."""
        return [name for name in ("bf16", "fp16", "pure_bf16") if getattr(self, name)]

    @property
    def needs_cuda(self) -> bool:
        """bf16/fp16 mixed precision and bitsandbytes quantization fail without a CUDA GPU."""
        return bool(self.mixed_precision) or self.quantization_bit is not None

    def lora_modules(self) -> list[str]:
        targets = [name.strip() for name in self.lora_target.split(",") if name.strip()]
        if "all" in targets:
            return list(LINEAR_LAYERS)
        return [name for name in LINEAR_LAYERS if name in targets]


@dataclass
class MemoryEstimate:
    device: str  # "gpu" or "cpu"
    shape: ModelShape
    params: int
    trainable_params: int
    parts: dict[str, int] = field(default_factory=dict)  # name -> bytes, in the order above

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def trainable_params(plan: TrainingPlan, shape: ModelShape) -> int:
    if plan.finetuning_type == "full":
        return shape.params()
    if plan.finetuning_type == "freeze":
        layers = min(abs(plan.freeze_trainable_layers), shape.layers)
        return layers * (shape.layer_linear_params() + 2 * shape.hidden)
    linears = shape.linear_shapes()
    per_layer = sum(linears[name][0] + linears[name][1] for name in plan.lora_modules())
    return plan.lora_rank * per_layer * shape.layers


def estimate_training_memory(plan: TrainingPlan, shape: ModelShape, *, device: str) -> MemoryEstimate:
    """Peak memory of one training process on `device` ("gpu" or "cpu"); see the module docstring."""
    width = 2 if device == "gpu" else 4  # bytes of the compute dtype
    params = shape.params()
    trainable = trainable_params(plan, shape)
    linear = shape.layers * shape.layer_linear_params()
    other = params - linear

    if plan.finetuning_type == "full":
        weights = 0  # every weight is trainable: counted with the optimizer
    elif plan.quantization_bit in (4, 8) and device == "gpu":
        per_param = FOUR_BIT_BYTES if plan.quantization_bit == 4 else EIGHT_BIT_BYTES
        weights = linear * per_param + other * width
    else:
        weights = params * width
    optimizer = trainable * (PURE_BF16_OPTIMIZER_BYTES if plan.pure_bf16 else OPTIMIZER_BYTES)

    tokens = plan.per_device_train_batch_size * plan.cutoff_len
    per_token_layer = 6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate
    if plan.flash_attn == "disabled":  # eager attention materialises scores and probabilities
        sequence = tokens if plan.packing else plan.cutoff_len
        per_token_layer += 2 * shape.heads * sequence
    if plan.gradient_checkpointing:
        activations = tokens * width * (shape.layers * shape.hidden + per_token_layer)
    else:
        activations = tokens * width * shape.layers * per_token_layer
    logits = tokens * shape.vocab * (width + 12)

    parts = {
        "weights": int(weights),
        "trainable": int(optimizer),
        "activations": int(activations),
        "logits": int(logits),
        "overhead": FIXED_OVERHEAD,
    }
    parts["fragmentation"] = int(FRAGMENTATION * sum(parts.values()))
    return MemoryEstimate(device=device, shape=shape, params=params, trainable_params=trainable, parts=parts)
