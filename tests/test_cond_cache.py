"""The cross-attention K/V cache of the runtime (vidquant.runtime.cond_cache): same bits, less work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidquant.runtime.cond_cache import cache_conditioning, uncache_conditioning


class CountingLinear(nn.Linear):
    calls = 0

    def forward(self, x):
        CountingLinear.calls += 1
        return super().forward(x)


def _toy(blocks: int = 3, dim: int = 8) -> nn.Module:
    model = nn.Module()
    model.blocks = nn.ModuleList()
    for _ in range(blocks):
        block = nn.Module()
        block.attn2 = nn.Module()
        block.attn2.to_q = CountingLinear(dim, dim)  # reads the latent: never cached
        block.attn2.to_k, block.attn2.to_v = CountingLinear(dim, dim), CountingLinear(dim, dim)
        block.attn2.add_k_proj = None
        model.blocks.append(block)
    return model


def test_equal_inputs_reuse_the_output_and_new_ones_compute():
    model = _toy()
    keys = list(model.state_dict())
    assert cache_conditioning(model) == 6
    assert list(model.state_dict()) == keys and isinstance(model.blocks[0].attn2.to_k, CountingLinear)
    k = model.blocks[0].attn2.to_k
    cond, uncond = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    CountingLinear.calls = 0
    with torch.no_grad():
        first = k(cond)
        again = k(cond.clone())  # a new tensor with the same content (diffusers rebuilds it every step)
        assert again is first and CountingLinear.calls == 1
        k(uncond)
        assert k(cond) is first and CountingLinear.calls == 2  # both CFG branches stay cached
        other = cond.clone()
        other[0, 0, 0] += 1e-3
        assert not torch.equal(k(other), first) and CountingLinear.calls == 3
        assert torch.equal(k(cond), nn.functional.linear(cond, k.weight, k.bias))  # evicted, recomputed
        assert CountingLinear.calls == 4


def test_in_place_changes_and_autograd_bypass_the_cache():
    model = _toy(1)
    cache_conditioning(model)
    k = model.blocks[0].attn2.to_k
    x = torch.randn(4, 8)
    with torch.no_grad():
        k(x)
        x.mul_(2)  # the remembered input changed under us: the entry is dropped
        assert torch.equal(k(x), nn.functional.linear(x, k.weight, k.bias))
        out2 = k(x)
        out2.add_(1)  # a caller modified the returned output: not served again
        assert torch.equal(k(x), nn.functional.linear(x, k.weight, k.bias))
    y = k(x)  # gradients on: computed, never cached
    assert y.requires_grad and y is not k(x)


def test_copies_are_independent_and_uncache_restores():
    model = _toy(2)
    cache_conditioning(model, entries=1)
    twin = copy.deepcopy(model)
    x = torch.randn(3, 8)
    with torch.no_grad():
        twin.blocks[0].attn2.to_k(x)
    assert model.blocks[0].attn2.to_k._memo == []
    assert uncache_conditioning(model) == 4
    assert type(model.blocks[0].attn2.to_k) is CountingLinear
    with pytest.raises(ValueError, match="entries"):
        cache_conditioning(model, entries=0)
