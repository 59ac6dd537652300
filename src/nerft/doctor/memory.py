"""How much memory a training run needs: the estimate over a model's shape and a plan's settings.

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

from nerft.models.shapes import ModelShape
from nerft.training.settings import TrainingSettings

GIB = 2**30
FOUR_BIT_BYTES = 0.516  # 4 bits + 0.127 bits of double-quantized block constants (QLoRA, section 3)
EIGHT_BIT_BYTES = 1.0
OPTIMIZER_BYTES = 16  # float32 weight + float32 gradient + Adam m and v
PURE_BF16_OPTIMIZER_BYTES = 8
FIXED_OVERHEAD = 1 * GIB
FRAGMENTATION = 0.10


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


def trainable_params(plan: TrainingSettings, shape: ModelShape) -> int:
    if plan.finetuning_type == "full":
        return shape.params()
    if plan.finetuning_type == "freeze":
        layers = min(abs(plan.freeze_trainable_layers), shape.layers)
        return layers * (shape.layer_linear_params() + 2 * shape.hidden)
    linears = shape.linear_shapes()
    per_layer = sum(linears[name][0] + linears[name][1] for name in plan.lora_modules())
    return plan.lora_rank * per_layer * shape.layers


def estimate_training_memory(plan: TrainingSettings, shape: ModelShape, *, device: str) -> MemoryEstimate:
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
