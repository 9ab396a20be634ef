"""GPTQ: closed forms on tiny layers, never worse than RTN on its own objective, exact re-quantization at
deploy, per_group / actorder / static_groups, true_sequential."""

from __future__ import annotations

import copy

import pytest
import torch
from _wanblock import linear_inputs, make_block, make_calib, run

from vidquant.algos.deploy import fake_weight
from vidquant.algos.gptq import GPTQ, STAGES, GPTQSolver
from vidquant.config import METHODS
from vidquant.quant.quantizer import FloatQuantizer, IntQuantizer

QUANTIZERS = {
    "int4": IntQuantizer(4),
    "int8": IntQuantizer(8),
    "fp8": FloatQuantizer("e4m3"),
}


def gptq(**special) -> GPTQ:
    return GPTQ({**METHODS["GPTQ"], **special})


def solver_with(H: torch.Tensor) -> GPTQSolver:
    s = GPTQSolver(H.shape[0], torch.device("cpu"))
    s.H = H.clone()
    return s


def linears(block) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("actorder", [False, True])
def test_diagonal_hessian_is_rtn(actorder):
    """With H diagonal, chol(H⁻¹) is diagonal: no error is propagated, so GPTQ == RTN bit for bit."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 16, generator=g)
    H = torch.diag(torch.rand(16, generator=g) + 0.1)
    for wq in QUANTIZERS.values():
        Q, scale, zero, _ = solver_with(H).quantize(W, wq, blocksize=4, actorder=actorder)
        assert torch.equal(Q, wq.fake(W))


def test_two_columns_closed_form():
    """Two columns, no act-order: q1 = Q(w1); the best w2 given q1 minimises (δ1, δ2) H (δ1, δ2)ᵀ, i.e.
    w2' = w2 + (w1 − q1)·H12 / H22 (with H damped: H + λI, λ = p·mean diag H); then q2 = Q(w2'). The grid
    is fixed from the original W."""
    wq = IntQuantizer(3)
    # Row 0: step 1/3, w1 = 1.38 steps -> q1 = 1 step, and H12/H22 ≈ −1.38 moves w2 from 3 to ≈ 2.48 steps,
    # so GPTQ rounds it to 2 where RTN keeps 3. Rows 1, 2: ordinary values.
    W = torch.tensor([[0.46, 1.0], [0.20, 0.61], [-0.74, 0.48]])
    H = torch.tensor([[2.0, -1.4], [-1.4, 1.0]])  # positive definite (det 0.04)
    p = 0.01
    lam = p * (2.0 + 1.0) / 2
    scale, _ = wq.qparams(W)
    q1 = wq.fake_with(W[:, :1], scale)
    w2 = W[:, 1:] + (W[:, :1] - q1) * -1.4 / (1.0 + lam)
    want = torch.cat([q1, wq.fake_with(w2, scale)], dim=1)
    Q, got_scale, zero, stats = solver_with(H).quantize(W, wq, blocksize=128, percdamp=p)
    # fp32 Cholesky vs the formula: ~1e-7 differences, far from any rounding boundary on these values.
    torch.testing.assert_close(Q, want, rtol=0, atol=1e-6)
    assert not torch.equal(want, wq.fake(W))  # the compensation changes at least one rounding
    assert torch.equal(got_scale, scale) and zero is None
    assert stats["loss"] > 0


def test_dead_column():
    """An input channel that is always 0 has H[j, j] = 0: its weights are set to 0 and H[j, j] to 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    x[:, 2] = 0
    s = GPTQSolver(6, torch.device("cpu"))
    s.add_batch(x)
    torch.testing.assert_close(s.H, 2 * x.T @ x / 64)  # H = (2/n) Σ x xᵀ over the n tokens
    Q, *_, stats = s.quantize(torch.randn(4, 6, generator=g), IntQuantizer(4), actorder=True)
    assert stats["dead_columns"] == 1 and torch.equal(Q[:, 2], torch.zeros(4))


@pytest.mark.parametrize("name", QUANTIZERS)
def test_not_worse_than_rtn_and_exact_on_its_grid(name):
    """On GPTQ's own objective, ||X (W − Q)ᵀ||² over the calibration inputs X (float inputs:
    true_sequential off), GPTQ ≤ RTN for every layer; and deploy re-quantizing Q on the recorded grid
    gives Q back exactly."""
    wq = QUANTIZERS[name]
    calib = make_calib()
    block = make_block()
    xs, w0 = linear_inputs(block, calib), linears(block)
    block, result = run(block, calib, [gptq(true_sequential=False)], wq)
    assert set(result.logs[0]["gptq"]) == set(w0)  # every linear, not only the subsets
    for n, w in w0.items():
        Q = block.get_submodule(n).weight.detach()
        qparams = result.weight_qparams[f"blocks.0.{n}"]
        assert torch.equal(fake_weight(Q, wq, qparams), Q), n
        X = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs[n]])
        err_gptq = float((X @ (w - Q).T).pow(2).sum())
        err_rtn = float((X @ (w - wq.fake(w)).T).pow(2).sum())
        assert err_gptq <= err_rtn, (n, err_gptq, err_rtn)


@pytest.mark.parametrize("i2v", [False, True])
def test_true_sequential(i2v):
    """The first stage (q, k, v) sees float inputs either way; later stages see the inputs produced by
    the already-quantized layers, so their result differs. All 10 / 12 layers stay exact on their grid."""
    wq = IntQuantizer(4)
    calib = make_calib(i2v=i2v)
    got = {}
    for ts in (False, True):
        aq = IntQuantizer(8, granularity="per_token")
        block, result = run(make_block(i2v), calib, [gptq(true_sequential=ts)], wq, aq)
        got[ts] = (linears(block), result)
    (w_f, _), (w_t, res_t) = got[False], got[True]
    assert len(w_t) == (12 if i2v else 10)
    for n in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
        assert torch.equal(w_f[n], w_t[n])
    for n in ("attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2"):
        assert not torch.equal(w_f[n], w_t[n])
    for n, Q in w_t.items():
        assert torch.equal(fake_weight(Q, wq, res_t.weight_qparams[f"blocks.0.{n}"]), Q), n
    for k, stage in enumerate(STAGES):  # forward order; the I2V image k/v go with the rest of attn2
        for n in stage:
            if n in w_t:
                assert res_t.logs[0]["gptq"][n]["stage"] == k


@pytest.mark.parametrize("static_groups, actorder", [(True, True), (False, False), (True, False)])
def test_per_group(static_groups, actorder):
    """per_group grids come back in the public (out, in/g) shape in the original column order, and
    re-quantizing Q on them is exact. Static groups are the min-max grids of the original weights."""
    wq = IntQuantizer(4, symmetric=False, granularity="per_group", group_size=16)
    calib = make_calib(n=2)
    block = make_block()
    w0 = linears(block)
    block, result = run(block, calib, [gptq(static_groups=static_groups, actorder=actorder, blocksize=24)], wq)
    for n, w in w0.items():
        Q = block.get_submodule(n).weight.detach()
        scale, zero = result.weight_qparams[f"blocks.0.{n}"]
        assert scale.shape == zero.shape == (w.shape[0], w.shape[1] // 16)
        assert torch.equal(fake_weight(Q, wq, (scale, zero)), Q), n
        if static_groups:
            s0, z0 = wq.qparams(w)
            assert torch.equal(scale, s0) and torch.equal(zero, z0)


def test_per_group_actorder_needs_static_groups():
    wq = IntQuantizer(4, granularity="per_group", group_size=16)
    with pytest.raises(ValueError, match="static_groups"):
        run(make_block(), make_calib(n=1), [gptq(static_groups=False, actorder=True)], wq)


def reference_gptq(W: torch.Tensor, H: torch.Tensor, wq, percdamp: float, actorder: bool = False,
                   static_groups: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Textbook GPTQ in float64, one column at a time, without Cholesky or blocks: after quantizing column j,
    the columns F not yet quantized (j included, in processing order) move by −(w_j − q_j) · [H_F⁻¹]_{j,F} /
    [H_F⁻¹]_{jj}, with H_F⁻¹ the inverse of the damped Hessian restricted to F, recomputed from scratch for every
    column. Order: descending diag(H) with actorder. Grid: the min-max grid of the original W (per_group with
    static_groups too); per_group without static_groups takes each group's grid from its updated columns when
    the first of them is reached. The loss of a column is (w_j − q_j)² / (2 [H_F⁻¹]_jj). Returns (Q, scale, loss)."""
    W, H = W.double().clone(), H.double().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    grouped, g = wq.granularity == "per_group", wq.group_size
    scale, zero = wq.qparams(W.float())
    order = torch.argsort(H.diagonal(), descending=True).tolist() if actorder else list(range(W.shape[1]))
    Q, loss = torch.zeros_like(W), 0.0
    for step, j in enumerate(order):
        k = j // g if grouped else 0
        if grouped and not static_groups and j % g == 0:
            s_k, z_k = wq.qparams(W[:, j:j + g].float())
            scale[:, k:k + 1] = s_k
            if zero is not None:
                zero[:, k:k + 1] = z_k
        grid = (scale[:, k:k + 1], None if zero is None else zero[:, k:k + 1]) if grouped else (scale, zero)
        Q[:, j] = wq.fake_with(W[:, j:j + 1].float(), *grid)[:, 0].double()
        rest = order[step:]
        hinv = torch.linalg.inv(H[rest][:, rest])
        loss += float(((W[:, j] - Q[:, j]) ** 2).sum() / (2 * hinv[0, 0]))
        W[:, rest] -= torch.outer(W[:, j] - Q[:, j], hinv[0] / hinv[0, 0])
    return Q.float(), scale, loss


def correlated_inputs(cols: int, tokens: int, seed: int) -> torch.Tensor:
    """Inputs with correlated channels of different scales: a non-diagonal Hessian with a spread diagonal."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5
    return torch.randn(tokens, cols, generator=g) @ (torch.eye(cols) + mix) * torch.linspace(0.5, 2.0, cols)


def assert_matches_reference(Q: torch.Tensor, want: torch.Tensor, step: torch.Tensor) -> None:
    """fp32 Cholesky vs float64 inverses: a value landing within ~1e-5 of a rounding boundary may go either
    way, and one flip moves the later columns slightly. Allow a handful of one-step disagreements, no more."""
    codes_diff = ((Q - want).abs() / step).round()
    assert codes_diff.max() <= 1, float(codes_diff.max())
    assert (codes_diff > 0).float().mean() < 0.01, float((codes_diff > 0).float().mean())


def test_lazy_block_update_matches_column_by_column_reference():
    """300 inputs with blocksize 128: three blocks, so the lazy update W[:, i2:] −= E · U[i1:i2, i2:] carries
    the error of the first 128 (and 256) columns into the later blocks. The blocked solver must match the
    unblocked float64 reference; without the lazy update, columns 128.. are far off."""
    cols, rows = 300, 12
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(6))
    wq = IntQuantizer(4)
    solver = GPTQSolver(cols, torch.device("cpu"))
    solver.add_batch(correlated_inputs(cols, 600, seed=5))
    want, _, want_loss = reference_gptq(W, solver.H, wq, percdamp=0.01)
    Q, *_, stats = solver.quantize(W, wq, blocksize=128, percdamp=0.01)
    assert_matches_reference(Q, want, wq.qparams(W)[0])
    assert stats["loss"] == pytest.approx(want_loss, rel=1e-3)  # every column's loss, once, in all three blocks
    # The test is not vacuous: the error feedback changes many codes compared with RTN in every block.
    rtn = wq.fake(W)
    for lo, hi in ((0, 128), (128, 256), (256, 300)):
        assert (want[:, lo:hi] != rtn[:, lo:hi]).float().mean() > 0.1


@pytest.mark.parametrize(("granularity", "actorder", "static_groups", "blocksize"), [
    ("per_channel", True, False, 16),
    ("per_group", False, False, 12),  # blocks rounded up to 16 so that a group never spans two
    ("per_group", True, True, 16),
])
def test_orderings_and_groups_match_reference(granularity, actorder, static_groups, blocksize):
    """act-order, dynamic and static per-group grids and blocks smaller than the layer, against the float64
    reference (which implements each rule directly), with a dead input channel."""
    cols, rows = 40, 8
    wq = (IntQuantizer(4, symmetric=False, granularity="per_group", group_size=8) if granularity == "per_group"
          else IntQuantizer(4))
    X = correlated_inputs(cols, 200, seed=8)
    X[:, 5] = 0
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(9))
    solver = GPTQSolver(cols, torch.device("cpu"))
    solver.add_batch(X, chunks=3)
    want, want_scale, want_loss = reference_gptq(W, solver.H, wq, 0.01, actorder, static_groups)
    Q, scale, zero, stats = solver.quantize(W, wq, blocksize=blocksize, percdamp=0.01, actorder=actorder,
                                            static_groups=static_groups)
    assert_matches_reference(Q, want, wq.qparams(W)[0].repeat_interleave(8 if granularity == "per_group" else 1,
                                                                        dim=1))
    torch.testing.assert_close(scale, want_scale.float(), rtol=1e-4, atol=1e-7)
    assert stats["dead_columns"] == 1 and torch.equal(Q[:, 5], torch.zeros(rows))
    assert not torch.equal(Q, wq.fake(W))
    # a dead input's diagonal counts as 1 in the damping, as in the reference implementations
    diag = solver.H.diagonal().clone()
    diag[5] = 1
    assert diag.mean() > 1.5 and stats["damp"] == pytest.approx(0.01 * float(diag.mean()), rel=1e-6)
    assert stats["loss"] == pytest.approx(want_loss, rel=1e-3)


def test_hessian_accumulation_loss_and_damping_closed_forms():
    """H = (2/n) Σ x xᵀ over all tokens of all batches (any chunking, empty batches ignored); with a diagonal H
    the loss is Σ (w − q)² (H_ii + λ) / 2 and λ = percdamp · mean(diag H)."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 5, 4, generator=g), torch.randn(7, 4, generator=g), torch.zeros(0, 4)]
    s = GPTQSolver(4, torch.device("cpu"))
    for x, chunks in zip(xs, (1, 3, 2)):
        s.add_batch(x, chunks)
    X = torch.cat([x.reshape(-1, 4) for x in xs])
    assert s.n == 17
    torch.testing.assert_close(s.H, 2 * X.T @ X / 17)
    d = torch.tensor([4.0, 1.0, 0.25, 2.0])
    W = torch.randn(3, 4, generator=g)
    wq = IntQuantizer(3)
    solver = solver_with(torch.diag(d))
    Q, *_, stats = solver.quantize(W, wq, percdamp=0.1, keep_hessian=False)
    lam = 0.1 * float(d.mean())
    assert stats["damp"] == pytest.approx(lam)
    assert stats["loss"] == pytest.approx(float(((W - Q) ** 2 * (d + lam)).sum() / 2), rel=1e-5)
    assert solver.H is None  # keep_hessian=False works in the solver's own H and releases it
    kept = solver_with(torch.diag(d))
    kept.quantize(W, wq)
    assert torch.equal(kept.H, torch.diag(d))  # keep_hessian=True leaves it untouched for the next layer


def test_not_positive_definite_hessian_is_a_clear_error():
    with pytest.raises(FloatingPointError, match="not positive definite.*percdamp"):
        solver_with(-torch.eye(3)).quantize(torch.ones(2, 3), IntQuantizer(4))


def test_gptq_options_and_stages():
    with pytest.raises(ValueError, match="owq"):  # refused when the options are read, before any work
        run(make_block(), make_calib(n=1), [gptq(owq=True)], IntQuantizer(4))
    block, result = run(make_block(), make_calib(n=2), [gptq(true_sequential=False)], IntQuantizer(4))
    log = result.logs[0]["gptq"]
    assert all(rec["tokens"] == 2 * 32 for n, rec in log.items() if n.startswith("attn1")), log  # 2 samples × 32
    assert log["attn2.to_k"]["tokens"] == 2 * 16  # cross-attention reads the 16 text tokens

    class Ctx:
        linears = {n: None for n in ("ffn.net.2", "extra.proj", "attn1.to_q")}

    assert GPTQ.stages(Ctx) == [("attn1.to_q",), ("ffn.net.2",), ("extra.proj",)]


@pytest.mark.parametrize("true_sequential", [False, True])
def test_hessian_source_follows_true_sequential(true_sequential):
    """attn1.to_out.0 (stage 2) is solved on the captured float inputs without true_sequential, and with it on
    the inputs produced by the quantized q, k, v (weights on their grids, activations through aq): both
    recomputed here with an independent capture and a fresh solver must give the layer's Q bit for bit."""
    wq, aq = IntQuantizer(4), IntQuantizer(8, granularity="per_token")
    calib = make_calib(n=2)
    block = make_block()
    w0 = block.attn1.to_out[0].weight.detach().clone()
    probe = copy.deepcopy(block)
    done, result = run(block, calib, [gptq(true_sequential=true_sequential)], wq, aq)
    if true_sequential:
        for n in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
            lin = probe.get_submodule(n)
            lin.weight.data = done.get_submodule(n).weight.detach().clone()
            lin.register_forward_pre_hook(lambda _m, args: (aq.fake(args[0]),))
    solver = GPTQSolver(w0.shape[1], torch.device("cpu"))
    for x in linear_inputs(probe, calib)["attn1.to_out.0"]:
        solver.add_batch(x)
    sp = METHODS["GPTQ"]
    Q, *_ = solver.quantize(w0, wq, int(sp["blocksize"]), float(sp["percdamp"]), bool(sp["actorder"]))
    assert torch.equal(done.attn1.to_out[0].weight, Q)


def test_single_token_batch_counts():
    x = torch.tensor([[1.0, -2.0, 0.5]])
    s = GPTQSolver(3, torch.device("cpu"))
    s.add_batch(x)
    assert s.n == 1
    torch.testing.assert_close(s.H, 2 * x.T @ x)  # (√2·x)ᵀ(√2·x): fp32 rounding of √2 only


def test_bf16_inputs_accumulate_in_fp32():
    """Wan activations are bf16; the Hessian is accumulated from their fp32 values in fp32."""
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(2)).bfloat16()
    s = GPTQSolver(4, torch.device("cpu"))
    s.add_batch(x)
    assert s.H.dtype == torch.float32
    torch.testing.assert_close(s.H, 2 * x.float().T @ x.float() / 9)


def _hessian_and_weight(cols: int = 256, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4 * cols, cols, generator=g) * torch.linspace(0.2, 3.0, cols)  # uneven input scales
    return x.T @ x, torch.randn(rows, cols, generator=g)


def test_solver_defaults_are_the_documented_ones():
    """quantize() without options is blocksize 128, percdamp 0.01, no actorder and dynamic groups, bit for bit
    (codes, scales and the loss/damping stats): a changed default changes results silently otherwise."""
    H, W = _hessian_and_weight()
    wq = IntQuantizer(4, granularity="per_group", group_size=64)
    default = solver_with(H).quantize(W, wq)
    spelled = solver_with(H).quantize(W, wq, blocksize=128, percdamp=0.01, actorder=False, static_groups=False)
    assert torch.equal(default[0], spelled[0]) and torch.equal(default[1], spelled[1])
    assert default[2] is None and spelled[2] is None and default[3] == spelled[3]


def test_symmetric_per_group_grids_have_no_zero_point():
    """Symmetric per-group GPTQ (e.g. int4 g128): the grid is scale only, every output lies on it."""
    H, W = _hessian_and_weight()
    wq = IntQuantizer(4, symmetric=True, granularity="per_group", group_size=128)
    Q, scale, zero, _ = solver_with(H).quantize(W, wq, static_groups=False)
    assert zero is None and scale.shape == (64, 2)
    codes = Q / scale.repeat_interleave(128, dim=1)
    assert torch.allclose(codes, codes.round(), atol=1e-5) and codes.round().abs().max() <= 8


def test_nvfp4_needs_static_groups():
    from vidquant.quant.blockfmt import NVFP4Quantizer

    H, W = _hessian_and_weight()
    with pytest.raises(ValueError, match="GPTQ with nvfp4 weights needs static_groups: True"):
        solver_with(H).quantize(W, NVFP4Quantizer(), static_groups=False)
    Q, *_ = solver_with(H).quantize(W, NVFP4Quantizer(), static_groups=True)
    assert Q.shape == W.shape and torch.isfinite(Q).all()
