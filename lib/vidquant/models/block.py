"""A Wan block that can absorb smoothing scales in front of its adaLN-modulated norms.

`norm1` (self-attention) and `norm3` (FFN) have no affine parameters: their output is modulated per
timestep, `LN(x)·(1+scale) + shift`. To fold a per-channel smoothing vector 1/s into them for *every*
timestep, LLMC adds "fake affine" vectors w, b (both start at ONE) that multiply the modulation:

    h = LN(x) · ((1 + scale) · w) + shift · b          (llmc_reference §3.2)

Dividing w and b by s divides h by s exactly. They are exported as `affine_norm1` / `affine_norm3` and
lightx2v applies them the same way. The cross-attention norm `norm2` is a real affine LayerNorm and
absorbs its scale directly.

`make_smoothable(block)` converts one block instance in place (its class becomes a subclass of the
diffusers block, nothing global is patched); with w = b = 1 it computes exactly what diffusers does.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn


class FakeAffine(nn.Module):
    """The fp32 (weight, bias) pair that multiplies an adaLN modulation; identity when both are ones."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.bias = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, normed: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return normed * ((1 + scale) * self.weight) + shift * self.bias


class SmoothableWanBlock(WanTransformerBlock):
    """diffusers' WanTransformerBlock with `affine_norm1` / `affine_norm3`. Never constructed directly:
    use `make_smoothable`, which keeps the block's weights and only changes how modulation is applied."""

    affine_norm1: FakeAffine
    affine_norm3: FakeAffine

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift, scale, gate, c_shift, c_scale, c_gate), fp32, broadcastable over tokens."""
        if temb.ndim == 4:  # Wan2.2 TI2V: per-token modulation (B, L, 6, D)
            chunks = (self.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
            return tuple(c.squeeze(2) for c in chunks)
        return (self.scale_shift_table + temb.float()).chunk(6, dim=1)

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb):  # noqa: D102 - as diffusers
        x = hidden_states
        shift, scale, gate, c_shift, c_scale, c_gate = self.modulation(temb)

        h = self.affine_norm1(self.norm1(x.float()), scale, shift).type_as(x)
        x = (x.float() + self.attn1(h, None, None, rotary_emb) * gate).type_as(x)

        h = self.norm2(x.float()).type_as(x)
        x = x + self.attn2(h, encoder_hidden_states, None, None)

        h = self.affine_norm3(self.norm3(x.float()), c_scale, c_shift).type_as(x)
        x = (x.float() + self.ffn(h).float() * c_gate).type_as(x)
        return x


def make_smoothable(block: nn.Module) -> SmoothableWanBlock:
    """Give a diffusers Wan block its fake-affine vectors (in place; idempotent)."""
    if isinstance(block, SmoothableWanBlock):
        return block
    if not isinstance(block, WanTransformerBlock):
        raise TypeError(f"expected a diffusers WanTransformerBlock, got {type(block).__name__}")
    if not isinstance(block.norm2, nn.LayerNorm) or block.norm2.weight is None:
        raise ValueError("block.norm2 has no affine parameters (cross_attn_norm=False): the cross-attention "
                         "smoothing scale has nowhere to go")
    dim = block.scale_shift_table.shape[-1]
    device = block.scale_shift_table.device
    block.affine_norm1 = FakeAffine(dim).to(device)
    block.affine_norm3 = FakeAffine(dim).to(device)
    block.__class__ = SmoothableWanBlock
    return block


def make_transformer_smoothable(transformer: nn.Module) -> nn.Module:
    """Convert every block of a WanTransformer3DModel (in place)."""
    for block in transformer.blocks:
        make_smoothable(block)
    return transformer
