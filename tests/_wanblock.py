"""A small random Wan block and hand-built calibration data, shared by the algorithm tests.

dim 64, ffn 128, 2 heads (head_dim 32), 32 video tokens (a 2×8×8 latent with 1×2×2 patches), a few
calibration samples. A few hidden-state channels and adaLN scales are ×20 so that activations have the
channel outliers smoothing is about. I2V blocks get 512 + 8 context tokens: diffusers' processor treats
the first (S − 512) as image context.
"""

from __future__ import annotations

import copy

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock
from torch import nn

from vidquant.algos.engine import run_blockwise
from vidquant.calib.capture import CalibData

DIM, FFN, HEADS = 64, 128, 2
LATENT = (2, 8, 8)  # frames, height, width -> 2·4·4 = 32 tokens with patch (1, 2, 2)
TOKENS = 32
OUTLIERS = (3, 17, 40)


class Holder(nn.Module):
    """The smallest 'transformer' run_blockwise accepts: something with `.blocks`."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList([block])


def make_block(i2v: bool = False, seed: int = 0) -> WanTransformerBlock:
    torch.manual_seed(seed)
    block = WanTransformerBlock(dim=DIM, ffn_dim=FFN, num_heads=HEADS, qk_norm="rms_norm_across_heads",
                                cross_attn_norm=True, eps=1e-6, added_kv_proj_dim=DIM if i2v else None)
    with torch.no_grad():  # Gaussian weights (real ones are bell-shaped, nn.Linear's init is uniform),
        for m in block.modules():  # random norm affines and adaLN table, with outlier channels
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
        block.norm2.weight.normal_(1.0, 0.2)
        block.norm2.bias.normal_(0.0, 0.2)
        block.norm2.weight[list(OUTLIERS)] *= 20
        block.scale_shift_table[0, 1, list(OUTLIERS)] += 20  # (1 + scale) of the self-attention norm
        block.scale_shift_table[0, 4, list(OUTLIERS)] += 20  # (1 + c_scale) of the FFN norm
    return block.eval()


def rotary() -> tuple[torch.Tensor, torch.Tensor]:
    rope = WanRotaryPosEmbed(attention_head_dim=DIM // HEADS, patch_size=(1, 2, 2), max_seq_len=64)
    cos, sin = rope(torch.zeros(1, 4, *LATENT))
    return cos.float(), sin.float()


def make_calib(n: int = 4, i2v: bool = False, seed: int = 1) -> CalibData:
    g = torch.Generator().manual_seed(seed)
    cos, sin = rotary()
    data = CalibData()
    context = 512 + 8 if i2v else 16
    for _ in range(n):
        hidden = torch.randn(1, TOKENS, DIM, generator=g)
        hidden[..., list(OUTLIERS)] *= 20
        data.hidden_states.append(hidden)
        data.block_kwargs.append({
            "encoder_hidden_states": torch.randn(1, context, DIM, generator=g),
            "temb": 0.1 * torch.randn(1, 6, DIM, generator=g),
            "rotary_emb": (cos, sin),
        })
    return data


def run(block: nn.Module, calib: CalibData, algorithms: list, wq, aq=None):
    """run_blockwise on a one-block holder (in place); returns (block, BlockwiseResult)."""
    holder = Holder(block)
    result = run_blockwise(holder, calib, algorithms, wq, aq, device="cpu", progress=False)
    return holder.blocks[0], result


def outputs(block: nn.Module, calib: CalibData) -> list[torch.Tensor]:
    with torch.no_grad():
        return [block(h, **kw) for h, kw in zip(calib.hidden_states, calib.block_kwargs)]


def linear_inputs(block: nn.Module, calib: CalibData) -> dict[str, list[torch.Tensor]]:
    """Every linear's input per sample, from a float copy of the block (independent of the engine)."""
    block = copy.deepcopy(block)
    got: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_pre_hook(lambda m, a, n=n: got.setdefault(n, []).append(a[0].detach()))
               for n, m in block.named_modules() if isinstance(m, nn.Linear)]
    outputs(block, calib)
    for h in handles:
        h.remove()
    return got
