"""AWQ: the searched scale keeps the float block, the losses and the chosen scale match a hand
recomputation, the two ratio-selection rules, and weight clipping."""

from __future__ import annotations

import copy

import pytest
import torch
from _wanblock import linear_inputs, make_block, make_calib, outputs, run
from test_smoothquant import assert_same_output

from vidquant.algos.awq import Awq, AwqConfig, awq_scale, best_clip, strided_tokens, weight_channel_mean
from vidquant.config import METHODS
from vidquant.models.layout import SUBSETS
from vidquant.quant.quantizer import IntQuantizer

W4 = IntQuantizer(4)
A8 = IntQuantizer(8, granularity="per_token")


def awq(**special) -> Awq:
    return Awq({**METHODS["Awq"], **special})


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_float_output_unchanged(version):
    calib = make_calib()
    block = make_block()
    ref = outputs(copy.deepcopy(block), calib)
    block, result = run(block, calib, [awq(trans_version=version)], W4)
    assert_same_output(outputs(block, calib), ref)
    # With ×20 outlier channels and int4 weights smoothing pays: some subset picks r > 0 with a lower loss.
    log = result.logs[0]["awq"]
    assert any(log[s.name]["ratio"] > 0 and log[s.name]["loss"] < log[s.name]["loss_ratio0"] for s in SUBSETS)


def test_scale_formula_hand_case():
    a = torch.tensor([4.0, 1.0, 0.25])
    assert torch.equal(awq_scale(a, 0.0), torch.ones(3))  # r = 0: no smoothing
    # r = 1: s = a, normalised by sqrt(max·min) = sqrt(4·0.25) = 1
    torch.testing.assert_close(awq_scale(a, 1.0), a)
    # r = 0.5: sqrt(a) = [2, 1, .5], sqrt(2·.5) = 1
    torch.testing.assert_close(awq_scale(a, 0.5), torch.tensor([2.0, 1.0, 0.5]))
    # v1 divides by w_mean^(1−r): r = 0.5, w_mean = [4, 1, 1] -> [1, 1, .5] / sqrt(.5)
    torch.testing.assert_close(awq_scale(a, 0.5, torch.tensor([4.0, 1.0, 1.0])),
                               torch.tensor([1.0, 1.0, 0.5]) / 0.5**0.5)
    # v1 w_mean: |W| / rowmax, mean over rows: rows [2, -1] -> [1, .5], [4, 4] -> [1, 1]
    torch.testing.assert_close(weight_channel_mean([torch.tensor([[2.0, -1.0], [4.0, 4.0]])], W4),
                               torch.tensor([1.0, 0.75]))
    # a zero channel: a^r = 0 is floored at 1e-4 before the normalisation; r = .5: [2, 1e-4, 1] / sqrt(2e-4)
    torch.testing.assert_close(awq_scale(torch.tensor([4.0, 0.0, 1.0]), 0.5),
                               torch.tensor([2.0, 1e-4, 1.0]) / (2e-4) ** 0.5)
    # v1 with a dead weight column (w_mean 0, floored at 1e-8): r = .5, a = [1, 1, 4], w_mean = [1, 0, 4]
    # -> [1, 1e4, 1] / sqrt(1e4 · 1)
    torch.testing.assert_close(awq_scale(torch.tensor([1.0, 1.0, 4.0]), 0.5, torch.tensor([1.0, 0.0, 4.0])),
                               torch.tensor([1.0, 1e4, 1.0]) / 100.0)


def test_weight_channel_mean_per_group_zero_rows_and_layers():
    """Per group the max is the group's: [2, -1 | 4, 4] -> [1, .5 | 1, 1]; a zero row gives zeros (not NaN); the
    layers of a subset are averaged."""
    wg = IntQuantizer(4, granularity="per_group", group_size=2)
    first = torch.tensor([[2.0, -1.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]])  # rows: [1, .5, 1, 1], [0, 0, 0, 0]
    # magnitudes below 1 (real weights): the ratio is scale-free; rows [1, 1, 1, .25], [1, .5, 0, 1]
    second = torch.tensor([[1.0, 1.0, -8.0, 2.0], [3.0, 1.5, 0.0, 1.0]]) / 16
    torch.testing.assert_close(weight_channel_mean([first], wg), torch.tensor([0.5, 0.25, 0.5, 0.5]))
    torch.testing.assert_close(weight_channel_mean([first, second], wg),
                               (torch.tensor([0.5, 0.25, 0.5, 0.5]) + torch.tensor([1.0, 0.75, 0.5, 0.625])) / 2)
    # per channel the row's max spans the whole row: [2, -1, 4, 4] -> [.5, .25, 1, 1]
    torch.testing.assert_close(weight_channel_mean([first[:1]], W4), torch.tensor([0.5, 0.25, 1.0, 1.0]))


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("n_grid", 0, "an integer >= 1"),
    ("clip_max_tokens", 0, "an integer >= 1"),
    ("save_scale", True, "False (the scales are returned in BlockwiseResult.smooth; clipping changes the weights "
                         "themselves)"),
    ("save_clip", True, "False (the scales are returned in BlockwiseResult.smooth; clipping changes the weights "
                        "themselves)"),
])
def test_config_refuses_out_of_range_options(field, value, allowed):
    with pytest.raises(ValueError) as err:
        AwqConfig(**{field: value})
    assert str(err.value) == f"Awq.{field}: got {value!r}; allowed: {allowed}"


def test_config_smallest_valid_options():
    cfg = AwqConfig(n_grid=1, clip_max_tokens=1)
    assert (cfg.n_grid, cfg.clip_max_tokens, cfg.save_scale, cfg.save_clip) == (1, 1, False, False)


@pytest.mark.parametrize(("aq", "version"), [(None, "v2"), (A8, "v2"), (A8, "v1")], ids=["w4", "w4a8", "w4a8-v1"])
def test_losses_and_scale_match_hand_recomputation(aq, version):
    """Loss at r = 0 (s = 1 in v2) is the inspect module's MSE with Q_w(W) weights and Q_a on its input only;
    the chosen mean loss is ≤ it; the folded s is the mean of the per-sample normalised scales at r* (v1: with the
    subset's w_mean); the losses are kept in float64 and the scores are their means."""
    calib = make_calib()
    block = make_block()
    float_block = copy.deepcopy(block)
    xs = linear_inputs(block, calib)
    block, result = run(block, calib, [awq(trans_version=version)], W4, aq)
    log = result.logs[0]["awq"]
    for subset in SUBSETS:
        rec = log[subset.name]
        losses = rec["losses"]  # (n_grid, samples)
        assert losses.shape == (20, len(calib)) and losses.dtype == torch.float64
        assert rec["ratios"] == [n / 20 for n in range(20)]  # 0 .. 0.95, 1.0 excluded
        assert rec["loss"] <= rec["loss_ratio0"]
        assert rec["loss"] == float(losses.mean(1).min())
        assert rec["loss_ratio0"] == float(losses[0].mean())
        assert rec["ratio"] == rec["ratios"][int(losses.mean(1).argmin())]
        a = [x.abs().reshape(-1, x.shape[-1]).mean(0) for x in xs[subset.input]]
        w_mean = None
        if version == "v1":
            w_mean = weight_channel_mean([float_block.get_submodule(n).weight.detach() for n in subset.layers], W4)
        s = torch.stack([awq_scale(ai, rec["ratio"], w_mean) for ai in a]).mean(0)
        torch.testing.assert_close(rec["scale"], s)
        torch.testing.assert_close(result.smooth[f"blocks.0.{subset.input}"], s)

        # the loss at r = 0: s0 = 1 in v2 (plain quantization), the normalised 1 / w_mean in v1
        fm = float_block.get_submodule(subset.inspect)
        for i, x in enumerate(xs[subset.input]):
            s0 = awq_scale(a[i], 0.0, w_mean)
            quant = copy.deepcopy(float_block)
            for n in subset.layers:
                lin = quant.get_submodule(n)
                lin.weight.data = W4.fake(lin.weight.data * s0)
            kw = {own: calib.block_kwargs[i][blk] for blk, own in subset.kwargs}
            with torch.no_grad():
                want = (quant.get_submodule(subset.inspect)(x / s0 if aq is None else aq.fake(x / s0), **kw)
                        - fm(x, **kw)).pow(2).mean()
            # Same fp32 ops in a different order (the loss is a mean of squares): 1e-5 relative.
            assert float(losses[0, i]) == pytest.approx(float(want), rel=1e-5)


def test_ratio_selection():
    """`mean` picks argmin of the mean loss; `first_sample` (LLMC) argmin of sample 0's loss only."""
    calib = make_calib()
    picks = {}
    for rule in ("mean", "first_sample"):
        _, result = run(make_block(), calib, [awq(ratio_selection=rule)], W4)
        picks[rule] = result.logs[0]["awq"]
    for subset in SUBSETS:
        m, f = picks["mean"][subset.name], picks["first_sample"][subset.name]
        torch.testing.assert_close(m["losses"], f["losses"])  # the search itself is the same
        assert m["ratio"] == m["ratios"][int(m["losses"].mean(1).argmin())]
        assert f["ratio"] == f["ratios"][int(f["losses"][:, 0].argmin())]
    # On this data the two rules disagree somewhere, so the option is not a no-op.
    assert any(picks["mean"][s.name]["ratio"] != picks["first_sample"][s.name]["ratio"] for s in SUBSETS)


def test_trans_false_leaves_block():
    calib = make_calib()
    block = make_block()
    before = copy.deepcopy(block.state_dict())
    block, result = run(block, calib, [awq(trans=False)], W4)
    for k, v in before.items():
        assert torch.equal(block.state_dict()[k], v), k
    assert result.logs[0]["awq"] == {} and result.smooth == {}


def test_best_clip_hand_case():
    """One row with an outlier weight on a channel whose input is 0: clamping it costs nothing, and at
    shrink 0.7 the int4 step is 0.7·10/7 = 1, which represents the other (integer) weights exactly: zero
    error, while every other shrink in 1.0..0.55 leaves some rounding error."""
    w = torch.tensor([[10.0, 1.0, -1.0, 2.0, -3.0, 1.0, 2.0, -2.0]])
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0] = 0
    lo, hi = best_clip(w, x, W4, None, symmetric=True)
    assert hi.item() == pytest.approx(7.0) and lo.item() == pytest.approx(-7.0)
    # The criterion: error at the chosen range ≤ error at shrink 1.0 (no clipping).
    err = lambda wc: float((x @ (W4.fake(wc) - w).T).pow(2).mean())  # noqa: E731
    assert err(w.clamp(-7.0, 7.0)) == 0.0 < err(w)


def test_strided_tokens_is_stride_of_concatenation():
    xs = [torch.arange(10.0).reshape(1, 5, 2), torch.arange(10.0, 24.0).reshape(1, 7, 2)]
    cat = torch.cat([x.reshape(-1, 2) for x in xs])
    assert torch.equal(strided_tokens(xs, 4), cat[:: 12 // 4])
    assert torch.equal(strided_tokens(xs, 100), cat)  # step floors at 1
    # three samples (the stride carries across each boundary), three channels: 16 tokens, step 4
    xs = [torch.arange(n * 3.0).reshape(1, n, 3) + 100 * i for i, n in enumerate((5, 7, 4))]
    cat = torch.cat([x.reshape(-1, 3) for x in xs])
    assert torch.equal(strided_tokens(xs, 4), cat[::4])


def test_weight_clip_i2v():
    calib = make_calib(i2v=True)
    block = make_block(i2v=True)
    w0 = {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    block, result = run(block, calib, [awq(trans=False, weight_clip=True)], W4, A8)
    clip = result.logs[0]["awq_clip"]
    # LLMC's "k_" substring filter; to_q / to_k are clipped
    assert [n for n, rec in clip.items() if rec["skipped"]] == ["attn2.add_k_proj"]
    assert torch.equal(block.attn2.add_k_proj.weight, w0["attn2.add_k_proj"])
    for n, w in w0.items():
        now = block.get_submodule(n).weight
        assert (now.abs().amax(1) <= w.abs().amax(1)).all()  # clamping only ever shrinks a row's range
        assert ((now == w) | (now.abs() < w.abs())).all()
    assert any(rec["mean_shrink"] < 1 for rec in clip.values())


def test_weight_clip_options():
    calib = make_calib(n=1)
    with pytest.raises(ValueError, match="clip_version"):
        run(make_block(), calib, [awq(weight_clip=True, clip_version="v2")], W4)
    # per_group clipping runs (one range per output channel and group)
    wq = IntQuantizer(4, granularity="per_group", group_size=16)
    _, result = run(make_block(), calib, [awq(trans=False, weight_clip=True, clip_sym=False)], wq)
    assert not result.logs[0]["awq_clip"]["ffn.net.2"]["skipped"]


@pytest.mark.parametrize(("clip_sym", "wq_symmetric", "symmetric"),
                         [(None, True, True), (None, False, False), (False, True, False), (True, False, True)])
def test_clip_weights_clamps_every_linear_to_its_best_range(clip_sym, wq_symmetric, symmetric):
    """Every linear but the LLMC-skipped one is clamped to best_clip's range on its own strided calibration
    tokens, symmetric as `clip_sym` says (the weight quantizer's `symmetric` when None); the record holds every
    linear, with mean_shrink = mean over channels of max(|lo|, |hi|) / max|w|."""
    calib = make_calib(n=2, i2v=True)
    block = make_block(i2v=True)
    w0 = {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    xs = linear_inputs(block, calib)
    wq = IntQuantizer(4, symmetric=wq_symmetric)
    block, result = run(block, calib, [awq(trans=False, weight_clip=True, clip_sym=clip_sym)], wq, A8)
    clip = result.logs[0]["awq_clip"]
    assert set(clip) == set(w0)
    other_rule_differs = False
    for n, w in w0.items():
        now = block.get_submodule(n).weight
        if n == "attn2.add_k_proj":
            assert clip[n] == {"skipped": True, "mean_shrink": 1.0}
            assert torch.equal(now, w)
            continue
        x = strided_tokens(xs[n], 512)
        lo, hi = best_clip(w, x, wq, A8, symmetric)
        assert torch.equal(now, torch.clamp(w, lo[:, 0], hi[:, 0]))
        shrink = (torch.maximum(lo.abs(), hi.abs()).flatten() / w.abs().amax(dim=1)).mean()
        assert clip[n] == {"skipped": False, "mean_shrink": pytest.approx(float(shrink), rel=1e-6)}
        other_rule_differs |= not torch.equal(best_clip(w, x, wq, A8, not symmetric)[1], hi)
    assert other_rule_differs  # so the test tells the two rules apart


def _best_clip_reference(w, x, wq, aq, symmetric):
    """best_clip from its definition, group by group in float64: for each shrink f (1.0, 0.95, ..., 0.55) the range
    f·[min, max] (f·[−absmax, absmax] when symmetric) of each row's group, the error mean_t (Q_a(x)·Q_w(clamp W) −
    x·W)² of that group's partial product; returns the per-(row, group) errors (n_f, out, G) and ranges."""
    out_f, in_f = w.shape
    g = wq.group_size if wq.granularity == "per_group" else in_f
    xq = x if aq is None else aq.fake(x)
    wg = w.reshape(out_f, in_f // g, g)
    if symmetric:
        hi0 = wg.abs().amax(-1, keepdim=True)
        lo0 = -hi0
    else:
        hi0, lo0 = wg.amax(-1, keepdim=True), wg.amin(-1, keepdim=True)
    errs, his, los = [], [], []
    for f in [1.0 - i / 20 for i in range(10)]:
        qw = wq.fake(torch.maximum(torch.minimum(wg, hi0 * f), lo0 * f).reshape(out_f, in_f)).reshape(wg.shape)
        err = torch.stack([((xq[:, j * g:(j + 1) * g].double() @ qw[:, j].double().T)
                            - (x[:, j * g:(j + 1) * g].double() @ wg[:, j].double().T)).pow(2).mean(0)
                           for j in range(in_f // g)], dim=1)
        errs.append(err)
        his.append(hi0 * f)
        los.append(lo0 * f)
    return torch.stack(errs), torch.stack(his), torch.stack(los)


@pytest.mark.parametrize(("wq", "aq", "symmetric", "rows"), [
    (W4, None, True, 300),  # more rows than one batch of the search (256)
    (IntQuantizer(4, symmetric=False, granularity="per_group", group_size=16), A8, False, 40),
    (IntQuantizer(4, granularity="per_group", group_size=16), A8, True, 40),
], ids=["sym-per-channel", "asym-per-group-a8", "sym-per-group-a8"])
def test_best_clip_is_the_argmin_of_its_definition(wq, aq, symmetric, rows):
    """Each (row, group) range is the one of smallest error over the shrink grid, computed independently; where the
    errors tie exactly (a group whose inputs are all zero: every range costs 0), the first, f = 1.0, is kept."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(rows, 64, generator=g) * torch.where(torch.rand(rows, 64, generator=g) < 0.03, 8.0, 1.0)
    x = torch.randn(96, 64, generator=g) * (1 + 5 * torch.rand(64, generator=g))
    x[:, 48:] = 0  # the last group (per_group) sees only zeros
    lo, hi = best_clip(w, x, wq, aq, symmetric)
    errs, his, los = _best_clip_reference(w, x, wq, aq, symmetric)
    assert lo.shape == hi.shape == his.shape[1:]
    best = errs.argmin(dim=0)  # (out, G): first minimum
    sorted_errs = errs.sort(dim=0).values
    clear = sorted_errs[1] - sorted_errs[0] > 1e-4 * sorted_errs[0] + 1e-12  # a unique best, by a margin
    tied = errs.amax(dim=0) == 0
    assert clear.float().mean() > 0.5 and (best[clear] > 0).any()  # most choices are clear; some clip
    pick = lambda t: t.gather(0, best[None, ..., None]).squeeze(0)  # noqa: E731
    for got, ref in ((hi, pick(his)), (lo, pick(los))):
        assert torch.equal(got[clear], ref[clear])
        assert torch.equal(got[tied], (his if got is hi else los)[0][tied])
    if wq.granularity == "per_group":
        assert tied[:, -1].all()


def test_weight_clip_refuses_per_tensor_weights():
    calib = make_calib(n=1)
    with pytest.raises(ValueError) as err:
        run(make_block(), calib, [awq(trans=False, weight_clip=True)], IntQuantizer(4, granularity="per_tensor"))
    assert str(err.value) == "Awq weight_clip needs per_channel or per_group weights, got per_tensor"
    # per_tensor weights without clipping are fine
    run(make_block(), calib, [awq(n_grid=2)], IntQuantizer(4, granularity="per_tensor"))


def test_bf16_block():
    """On a bf16 block (the real models' dtype) the search feeds the module bf16 inputs x / s, the weights stay
    bf16, and the float output is kept to bf16 precision."""
    calib = make_calib(n=2)
    for kw in calib.block_kwargs:
        kw["encoder_hidden_states"] = kw["encoder_hidden_states"].bfloat16()
        kw["temb"] = kw["temb"].bfloat16()
    calib.hidden_states[:] = [h.bfloat16() for h in calib.hidden_states]
    block = make_block().bfloat16()
    ref = outputs(copy.deepcopy(block), calib)
    block, result = run(block, calib, [awq(n_grid=4)], W4, A8)
    assert all(m.weight.dtype == torch.bfloat16 for m in block.modules() if isinstance(m, torch.nn.Linear))
    for got, want in zip(outputs(block, calib), ref):
        assert float((got.float() - want.float()).norm() / want.float().norm()) < 2e-2
    assert any(result.logs[0]["awq"][s.name]["ratio"] > 0 for s in SUBSETS)
