"""Deployment helpers (vidquant.algos.deploy) on hand-made weights: fixed grids are used as given, every block
linear is replaced, and the chain of algorithms is built from its names."""

from __future__ import annotations

import pytest
import torch
from _wanblock import Holder, make_block
from torch import nn

from vidquant.algos.deploy import deploy_fake_quant, dequantize_codes, quantize_weight
from vidquant.algos.engine import build_algorithms
from vidquant.algos.gptq import GPTQ
from vidquant.algos.smoothquant import SmoothQuant
from vidquant.config import METHODS
from vidquant.models.layout import T2V_LINEARS
from vidquant.quant import FakeQuantLinear, IntQuantizer

W = torch.tensor([[127.0, 2.5, -3.5], [0.5, -1.0, 0.25]])


def test_quantize_weight_dynamic_and_fixed_grid():
    wq = IntQuantizer(8)
    dyn = quantize_weight(W, wq)  # min-max: row 0 scale 1, row 1 scale 1/254
    assert torch.equal(dyn.codes[0], torch.tensor([127, 2, -4], dtype=torch.int8))
    # A fixed grid (as GPTQ records): scale 0.5 for both rows, no zero point.
    fixed = quantize_weight(W, wq, (torch.tensor([[0.5], [0.5]]), None))
    assert torch.equal(fixed.codes, torch.tensor([[127, 5, -7], [1, -2, 0]], dtype=torch.int8))
    assert torch.equal(fixed.scale, torch.tensor([[0.5], [0.5]]))
    asym = IntQuantizer(4, symmetric=False)
    with_zero = quantize_weight(W[1:], asym, (torch.tensor([[0.25]]), torch.tensor([[4.0]])))
    assert torch.equal(with_zero.codes, torch.tensor([[6, 0, 5]], dtype=torch.int8))  # 2+4, -4+4, 1+4
    assert torch.equal(with_zero.zero, torch.tensor([[4.0]]))


def test_fake_weight_dynamic_and_fixed_grids_with_and_without_zero():
    """fake_weight is quantize_weight's codes back on the grid: (codes - zero) · scale."""
    from vidquant.algos.deploy import fake_weight

    wq = IntQuantizer(8)
    assert torch.equal(fake_weight(W, wq)[0], torch.tensor([127.0, 2.0, -4.0]))  # min-max: scale 1, ties to even
    half = (torch.tensor([[0.5], [0.5]]), None)
    assert torch.equal(fake_weight(W, wq, half), torch.tensor([[63.5, 2.5, -3.5], [0.5, -1.0, 0.0]]))
    asym = IntQuantizer(4, symmetric=False)  # codes 6, 0, 5 with zero 4 (test above): (c - 4) · 0.25
    grid = (torch.tensor([[0.25]]), torch.tensor([[4.0]]))
    assert torch.equal(fake_weight(W[1:], asym, grid), torch.tensor([[0.5, -1.0, 0.25]]))


def test_dequantize_codes():
    codes = torch.tensor([[127, -2], [3, 0]], dtype=torch.int8)
    assert torch.equal(dequantize_codes(codes, torch.tensor([[0.5], [2.0]])), torch.tensor([[63.5, -1.0], [6.0, 0.0]]))
    got = dequantize_codes(codes.abs(), torch.tensor([[1.0], [1.0]]), torch.tensor([[2.0], [1.0]]))
    assert torch.equal(got, torch.tensor([[125.0, 0.0], [2.0, -1.0]]))


def test_deploy_fake_quant_replaces_every_block_linear_with_its_grid():
    holder = Holder(make_block(seed=0))
    holder.blocks.append(make_block(seed=1))
    w0 = {(i, n): holder.blocks[i].get_submodule(n).weight.detach().clone() for i in range(2) for n in T2V_LINEARS}
    wq, aq = IntQuantizer(8), IntQuantizer(8, granularity="per_token")
    coarse = (torch.full((w0[1, "ffn.net.2"].shape[0], 1), 0.05), None)  # a fixed grid for one layer only
    deploy_fake_quant(holder, wq, aq, {"blocks.1.ffn.net.2": coarse})
    for (i, n), w in w0.items():
        layer = holder.blocks[i].get_submodule(n)
        assert isinstance(layer, FakeQuantLinear) and layer.aq is aq, (i, n)
        want = wq.fake_with(w, *coarse) if (i, n) == (1, "ffn.net.2") else wq.fake(w)
        assert torch.equal(layer.weight, want), (i, n)
    assert not any(isinstance(m, nn.Linear) for b in holder.blocks for m in b.modules())


def test_build_algorithms_from_names():
    special = {"SmoothQuant": {"alpha": 0.6}, "GPTQ": {**METHODS["GPTQ"], "blocksize": 64}}
    algos = build_algorithms(["SmoothQuant", "GPTQ"], lambda m: special[m])
    assert [type(a) for a in algos] == [SmoothQuant, GPTQ]
    assert algos[0].special["alpha"] == 0.6 and algos[1].special["blocksize"] == 64  # each gets its own options
    with pytest.raises(ValueError, match="unknown option"):  # a misspelt option is an error, not a default
        build_algorithms(["SmoothQuant"], lambda m: {"alhpa": 0.6})
    with pytest.raises(KeyError):
        build_algorithms(["NoSuchMethod"], lambda m: {})


def test_build_algorithms_from_typed_options():
    from vidquant.algos.gptq import GPTQConfig
    from vidquant.algos.smoothquant import SmoothQuantConfig

    algos = build_algorithms([SmoothQuantConfig(alpha=0.6), GPTQConfig(blocksize=64)])
    assert [type(a) for a in algos] == [SmoothQuant, GPTQ]
    assert algos[0].special["alpha"] == 0.6 and algos[1].special["blocksize"] == 64


def test_fake_quantized_uses_the_recorded_grids_and_restores_the_block():
    from vidquant.algos.deploy import fake_quantized

    block = make_block(seed=2)
    original = {n: block.get_submodule(n) for n in T2V_LINEARS}
    wq = IntQuantizer(8)
    w = original["ffn.net.2"].weight.detach().clone()
    coarse = (torch.full((w.shape[0], 1), 0.05), None)
    with fake_quantized(block, wq, None, {"ffn.net.2": coarse}) as fq:
        assert torch.equal(fq.get_submodule("ffn.net.2").weight, wq.fake_with(w, *coarse))
        q = fq.get_submodule("attn1.to_q")
        assert torch.equal(q.weight, wq.fake(original["attn1.to_q"].weight.detach())) and q.aq is None
    assert all(block.get_submodule(n) is lin for n, lin in original.items())


def test_deploy_fake_quant_static_activation_scales():
    """nvfp4 / fp8-pertensor activations: each linear gets a StaticInputQuantizer with the scale derived from its
    own calibrated input absmax; a layer without one is refused before anything is replaced."""
    from vidquant.quant import FloatQuantizer
    from vidquant.quant.blockfmt import StaticInputQuantizer

    holder = Holder(make_block(seed=3))
    names = [f"blocks.0.{n}" for n in T2V_LINEARS]
    wq = FloatQuantizer("e4m3", granularity="per_channel")
    aq = FloatQuantizer("e4m3", granularity="per_tensor", static=True)
    absmax = {key: torch.tensor(float(i + 1) * 448.0) for i, key in enumerate(names)}
    partial = dict(list(absmax.items())[:-1])
    with pytest.raises(ValueError, match=f"{names[-1]}: fp8-pertensor activations use a static scale"):
        deploy_fake_quant(holder, wq, aq, input_absmax=partial)
    assert not any(isinstance(m, FakeQuantLinear) for m in holder.modules())  # refused before any replacement
    deploy_fake_quant(holder, wq, aq, input_absmax=absmax)
    for i, key in enumerate(names):
        act = holder.get_submodule(key).aq
        assert isinstance(act, StaticInputQuantizer) and act.scheme == "fp8-pertensor", key
        assert act.scale.item() == float(i + 1)  # input_scale = absmax / 448


def test_bias_free_linears_fake_quantize_and_measure():
    """A linear without bias: its fake-quant twin has none, and the error table measures it from the definition."""
    import math

    from vidquant.algos.deploy import fake_quant_linear, linear_error_stats

    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(W)
    wq = IntQuantizer(8)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.25, 4.0, -1.0]])
    fq = fake_quant_linear(lin, wq, None)
    assert fq.bias is None and torch.equal(fq(x), x @ wq.fake(W).t())
    y, yq = (x @ W.t()).double(), (x @ wq.fake(W).t()).double()
    stats = linear_error_stats(W, lin, [x], None, wq, None, None, "cpu")
    assert stats["sqnr_db"] == pytest.approx(10 * math.log10(float((y * y).sum() / ((y - yq) ** 2).sum())), abs=1e-3)


def test_layer_error_of_an_exact_layer_and_of_a_silent_one():
    """A layer whose weight is on its grid and whose input is not quantized has no error: SQNR finite and huge,
    rel. error 0, cosine 1. A layer that only sees zeros (no bias) has nothing to measure: 0 dB, not NaN."""
    from vidquant.algos.deploy import linear_error_stats

    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[127.0, 2.0, -4.0], [-127.0, 5.0, 0.0]]))  # on the min-max grids (scale 1)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.25, 4.0, -1.0]])
    exact = linear_error_stats(lin.weight.detach(), lin, [x], None, IntQuantizer(8), None, None, "cpu")
    assert exact["sqnr_db"] > 300 and exact["rel_err"] == 0.0 and exact["cosine"] == pytest.approx(1.0, abs=1e-12)
    silent = linear_error_stats(lin.weight.detach(), lin, [torch.zeros(2, 3)], None, IntQuantizer(8), None, None,
                                "cpu")
    assert silent == {"sqnr_db": 0.0, "rel_err": 0.0, "cosine": 0.0}
