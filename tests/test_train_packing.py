"""Neat packing on this machine: LLaMA-Factory's block-diagonal mask keeps packed samples apart.

`neat_packing` is on in every preset, the CPU one included; on a CPU (and with SDPA or eager
attention anywhere) LLaMA-Factory's collator turns the packed sample ids into a 4D block-diagonal
mask. This checks, on the tiny model, that each packed sample then gets exactly the logits it gets
alone (and that without the mask it would not).
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_samples_do_not_attend_to_each_other(tiny_model, attention):
    import torch
    from llamafactory.data.collator import prepare_4d_attention_mask
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention).eval()
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(10, 1000, (1, 7), generator=generator)
    second = torch.randint(10, 1000, (1, 5), generator=generator)
    packed = torch.cat([first, second], dim=1)
    sample_ids = torch.tensor([[1] * 7 + [2] * 5])  # what LLaMA-Factory's packing writes into attention_mask
    with torch.no_grad():
        apart = model(input_ids=packed, attention_mask=prepare_4d_attention_mask(sample_ids, torch.float32)).logits
        alone_first = model(input_ids=first).logits
        alone_second = model(input_ids=second).logits
        crossed = model(input_ids=packed).logits
    assert torch.allclose(apart[0, :7], alone_first[0], atol=1e-5)
    assert torch.allclose(apart[0, 7:], alone_second[0], atol=1e-5)
    assert not torch.allclose(crossed[0, 7:], alone_second[0], atol=1e-2)  # plain packing would leak
