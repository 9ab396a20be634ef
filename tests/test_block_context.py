"""What the next algorithm of a chain sees after smoothing (BlockContext.divide_inputs / fold_smoothing): the
cached inputs divided by s once per shared input, the factors accumulated over smoothing steps."""

from __future__ import annotations

import pytest
import torch
from _wanblock import linear_inputs, make_block, make_calib, run

from vidquant.algos.base import ALGORITHMS, Algorithm, BlockContext, register
from vidquant.algos.fold import fold_smoothing
from vidquant.algos.smoothquant import SmoothQuant
from vidquant.models.layout import SUBSETS, Subset
from vidquant.quant.quantizer import IntQuantizer


class Probe(Algorithm):
    """Records what it is handed: a copy of every cached input and smoothing factor."""

    name = "Probe"

    def transform_block(self, ctx: BlockContext) -> None:
        self.inputs = {n: [x.clone() for x in xs] for n, xs in ctx.inputs.items()}
        self.smooth = {n: s.clone() for n, s in ctx.smooth.items()}


def test_next_algorithm_sees_inputs_divided_once_and_accumulated_factors():
    calib = make_calib(n=2)
    block = make_block()
    xs = linear_inputs(block, calib)
    first, second, probe = SmoothQuant({"alpha": 0.5}), Probe({}), Probe({})
    # SmoothQuant twice (α 0.5 is its own fixed point, so the second uses 0.8); a probe after each.
    _, result = run(block, calib, [first, second, SmoothQuant({"alpha": 0.8}), probe], IntQuantizer(8))
    for subset in SUBSETS:
        s1 = second.smooth[subset.input]
        total = probe.smooth[subset.input]
        for n in subset.layers:  # layers sharing the input share one factor and see one division
            assert torch.equal(second.smooth[n], s1) and torch.equal(probe.smooth[n], total)
            for x, seen in zip(xs[n], second.inputs[n]):
                torch.testing.assert_close(seen, x / s1)
            for x, seen in zip(xs[n], probe.inputs[n]):
                torch.testing.assert_close(seen, x / total)
        s2 = result.logs[0]["smoothquant"][subset.name]["scale"]  # the last SmoothQuant's own scale
        torch.testing.assert_close(total, s1 * s2)
        torch.testing.assert_close(result.smooth[f"blocks.0.{subset.input}"], total)
        assert not torch.allclose(s2, torch.ones_like(s2))
    assert "attn1.to_out.0" not in probe.smooth  # unsmoothed layers have no factor and unchanged inputs
    torch.testing.assert_close(probe.inputs["attn1.to_out.0"][0], xs["attn1.to_out.0"][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_fold_refuses_non_positive_or_non_finite_scales(bad):
    calib = make_calib(n=1)
    captured = {}

    class Fold(Algorithm):
        name = "Fold"

        def transform_block(self, ctx: BlockContext) -> None:
            s = torch.ones(64)
            s[3] = bad
            captured["weight"] = ctx.linears["attn1.to_q"].weight.detach().clone()
            with pytest.raises(ValueError, match="block 0 subset self_attn_qkv: smoothing scale"):
                fold_smoothing(ctx, SUBSETS[0], s)
            assert torch.equal(ctx.linears["attn1.to_q"].weight, captured["weight"])  # nothing changed

    run(make_block(), calib, [Fold({})], IntQuantizer(8))


def test_inspect_kwargs_maps_block_kwargs_to_the_module_arguments():
    calib = make_calib(n=2)
    ctx = BlockContext(0, None, {}, {}, calib.hidden_states, calib.block_kwargs, None, None, torch.device("cpu"))
    cross = ctx.inspect_kwargs(SUBSETS[1], 1)  # attn2 reads the text context as encoder_hidden_states
    assert list(cross) == ["encoder_hidden_states"]
    assert torch.equal(cross["encoder_hidden_states"], calib.block_kwargs[1]["encoder_hidden_states"])
    rope = ctx.inspect_kwargs(SUBSETS[0], 0)["rotary_emb"]  # a tuple of tensors stays a tuple
    assert isinstance(rope, tuple) and all(torch.equal(a, b) for a, b in zip(rope, calib.block_kwargs[0]["rotary_emb"]))
    assert ctx.inspect_kwargs(SUBSETS[2], 0) == {}


def test_register_adds_the_class_under_its_name():
    class Dummy(Algorithm):
        name = "DummyForTest"

    try:
        assert register(Dummy) is Dummy and ALGORITHMS["DummyForTest"] is Dummy
    finally:
        ALGORITHMS.pop("DummyForTest", None)


def test_fold_in_bf16_rounds_once_and_keeps_every_dtype():
    """On a bf16 block the fold computes in fp32 and rounds once: the previous op's weight and bias become
    dtype(w / s) in their own dtype, the linears' bf16(w · s), the cached inputs stay bf16 as bf16(x / s); the factor is
    kept in fp32. (s is not a power of two, so each of these differs from the unscaled value.)"""
    calib = make_calib(n=2)
    for kw in calib.block_kwargs:
        kw["encoder_hidden_states"] = kw["encoder_hidden_states"].bfloat16()
        kw["temb"] = kw["temb"].bfloat16()
    calib.hidden_states[:] = [h.bfloat16() for h in calib.hidden_states]
    checked = []

    class Fold(Algorithm):
        name = "Fold"

        def transform_block(self, ctx: BlockContext) -> None:
            for subset in SUBSETS:
                s = 1.0 + 0.37 * (torch.arange(64) % 5).float()
                prev = ctx.block.get_submodule(subset.prev_op)
                w_prev = prev.weight.detach().clone()
                b_prev = None if getattr(prev, "bias", None) is None else prev.bias.detach().clone()
                weights = [ctx.linears[n].weight.detach().clone() for n in subset.layers]
                xs = [x.clone() for x in ctx.inputs[subset.input]]
                fold_smoothing(ctx, subset, s)
                # the adaLN fake affines are fp32, norm2's real affine is the block's bf16
                assert prev.weight.dtype == w_prev.dtype
                assert torch.equal(prev.weight, (w_prev.float() / s).to(w_prev.dtype))
                if b_prev is not None:
                    assert torch.equal(prev.bias, (b_prev.float() / s).to(b_prev.dtype))
                checked.extend(["bf16 prev"] * (w_prev.dtype == torch.bfloat16))
                for n, w in zip(subset.layers, weights):
                    assert torch.equal(ctx.linears[n].weight, (w.float() * s).bfloat16())
                for x0, x in zip(xs, ctx.inputs[subset.input]):
                    assert x.dtype == torch.bfloat16 and torch.equal(x, (x0.float() / s).bfloat16())
                assert ctx.smooth[subset.input].dtype == torch.float32
                torch.testing.assert_close(ctx.smooth[subset.input], s, rtol=0, atol=0)
                checked.append(subset.name)

    run(make_block().bfloat16(), calib, [Fold({})], IntQuantizer(8))
    assert "bf16 prev" in checked and len(checked) > len(SUBSETS)


def test_fold_into_a_previous_op_without_bias():
    """fold_smoothing on any block: a previous op with a weight and no bias attribute at all (an RMSNorm) has only
    its weight divided; the linear's columns are multiplied and its cached input divided."""
    block = torch.nn.Sequential()
    block.add_module("norm", torch.nn.RMSNorm(8))
    block.add_module("proj", torch.nn.Linear(8, 4))
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
    assert not hasattr(block.norm, "bias")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, generator=g)
    ctx = BlockContext(0, block, {"proj": block.proj}, {"proj": [x]}, [], [], None, None, torch.device("cpu"))
    w_norm, w_proj = block.norm.weight.detach().clone(), block.proj.weight.detach().clone()
    s = 1.0 + torch.rand(8, generator=g)
    fold_smoothing(ctx, Subset("only", ("proj",), "norm", "proj"), s)
    assert torch.equal(block.norm.weight, w_norm / s)
    assert torch.equal(block.proj.weight, w_proj * s)
    assert torch.equal(ctx.inputs["proj"][0], x / s) and torch.equal(ctx.smooth["proj"], s)
