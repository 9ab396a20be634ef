"""SmoothQuant: hand-computed scales, the fold, and a float block output left unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from _wanblock import linear_inputs, make_block, make_calib, outputs, run

from vidquant.algos.smoothquant import SmoothQuant, act_channel_max, smoothing_scale, weight_channel_max
from vidquant.models.layout import SUBSETS
from vidquant.quant.quantizer import IntQuantizer


def assert_same_output(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    """Smoothing is exact in real arithmetic (W·diag(s) · x/s = W·x). In fp32 the fold rounds W·s, the
    norm's 1/s and the activations once each (~6e-8 relative), a few ops deep through attention and the
    FFN: 1e-5 of the output's range leaves a wide margin and still catches any wrong fold (≥ 1e-2)."""
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * float(r.abs().max()))


def test_scale_hand_case():
    # Two samples of a 3-channel activation and two linears (3 and 1 output rows) sharing it.
    xs = [torch.tensor([[[8.0, -1.0, 0.5]]]), torch.tensor([[[-2.0, 2.0, 0.25]]])]
    w1 = torch.tensor([[1.0, -8.0, 2.0], [-2.0, 4.0, 0.5]])
    w2 = torch.tensor([[0.5, 1.0, -1.0]])
    x_max, w_max = act_channel_max(xs), weight_channel_max([w1, w2])
    assert x_max.tolist() == [8.0, 2.0, 0.5]  # max over every token of every sample
    assert w_max.tolist() == [2.0, 8.0, 2.0]  # max over rows, then over the subset's layers
    # α = 0.5: sqrt(8/2), sqrt(2/8), sqrt(0.5/2);  α = 0.75: 8^.75/2^.25 = 4, 2^.75/8^.25 = 1, .5^.75/2^.25 = .5
    torch.testing.assert_close(smoothing_scale(x_max, w_max, 0.5), torch.tensor([2.0, 0.5, 0.5]))
    torch.testing.assert_close(smoothing_scale(x_max, w_max, 0.75), torch.tensor([4.0, 1.0, 0.5]))
    # A dead channel (x_max = 0) gets the 1e-5 floor instead of 0.
    assert smoothing_scale(torch.tensor([0.0]), torch.tensor([1.0]), 0.5).item() == pytest.approx(1e-5)


@pytest.mark.parametrize("i2v", [False, True])
def test_float_output_unchanged(i2v):
    calib = make_calib(i2v=i2v)
    block = make_block(i2v)
    ref = outputs(copy.deepcopy(block), calib)
    aq = IntQuantizer(8, granularity="per_token")
    block, _ = run(block, calib, [SmoothQuant({"alpha": 0.75})], IntQuantizer(8), aq)
    assert_same_output(outputs(block, calib), ref)


def test_block_scales_and_fold_match_formula():
    """Recompute every subset's scale from independently captured inputs and check where it was folded."""
    alpha = 0.5
    calib = make_calib()
    block = make_block()
    xs = linear_inputs(block, calib)
    w0 = {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    norm2_w0, norm2_b0 = block.norm2.weight.detach().clone(), block.norm2.bias.detach().clone()
    block, result = run(block, calib, [SmoothQuant({"alpha": alpha})], IntQuantizer(8))
    log = result.logs[0]["smoothquant"]
    for subset in SUBSETS:
        x_max = torch.stack([x.abs().reshape(-1, x.shape[-1]).amax(0) for x in xs[subset.input]]).amax(0)
        w_max = torch.stack([w0[n].abs().amax(0) for n in subset.layers]).amax(0).clamp_min(1e-5)
        s = (x_max**alpha / w_max ** (1 - alpha)).clamp_min(1e-5)
        torch.testing.assert_close(log[subset.name]["scale"], s)  # fp32 formula, same ops: default tol
        torch.testing.assert_close(log[subset.name]["x_max"], x_max)  # read by nb.smoothing_table
        for n in subset.layers:
            torch.testing.assert_close(block.get_submodule(n).weight, w0[n] * s)
            torch.testing.assert_close(result.smooth[f"blocks.0.{n}"], s)
        prev = block.get_submodule(subset.prev_op)
        if subset.prev_op == "norm2":  # the real affine absorbs 1/s
            torch.testing.assert_close(prev.weight, norm2_w0 / s)
            torch.testing.assert_close(prev.bias, norm2_b0 / s)
        else:  # fake-affine vectors start at ONE: both become 1/s
            torch.testing.assert_close(prev.weight, 1 / s)
            torch.testing.assert_close(prev.bias, 1 / s)
