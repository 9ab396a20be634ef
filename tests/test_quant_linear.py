"""Deploy modules: FakeQuantLinear and the real-quant W8A8Linear (int8 via _int_mm, fp8 via _scaled_mm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidquant.quant import (
    FakeQuantLinear,
    FloatQuantizer,
    IntQuantizer,
    W8A8Linear,
    quantize_act_per_token,
)

FMTS = ["int8", "fp8"]


def _linear(in_features: int = 96, out_features: int = 40, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# ------------------------------------------------------------------------------------------------------------
# Per-token activation quantization
# ------------------------------------------------------------------------------------------------------------


def test_act_int8_hand_case() -> None:
    # Token 0: absmax 254 -> s = 2 (exact); x/s = 127, 0.5, -1.5, 0 -> 127, 0, -2, 0 (ties to even).
    # Token 1: all zero -> scale floored at the smallest normal fp32, codes 0, nothing NaN.
    x = torch.tensor([[254.0, 1.0, -3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    codes, scale = quantize_act_per_token(x, "int8")
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (2, 1)
    assert torch.equal(codes, torch.tensor([[127, 0, -2, 0], [0, 0, 0, 0]], dtype=torch.int8))
    assert scale[0].item() == 2.0
    assert scale[1].item() > 0 and torch.isfinite(scale).all()


def test_act_fp8_hand_case() -> None:
    # Token 0: absmax 224 -> s = 0.5 (exact); x/s = 448, 17 (tie -> 16, even), -3 -> codes 448, 16, -3.
    # Token 1: all zero; token 2: tiny -> both use vllm's minimum scale 1/(448*512).
    x = torch.tensor([[224.0, 8.5, -1.5], [0.0, 0.0, 0.0], [1e-7, 0.0, 0.0]])
    codes, scale = quantize_act_per_token(x, "fp8")
    assert codes.dtype == torch.float8_e4m3fn
    assert torch.equal(codes[0].float(), torch.tensor([448.0, 16.0, -3.0]))
    assert scale[0].item() == 0.5
    min_scale = torch.tensor(1.0 / (448 * 512))
    assert torch.equal(scale[1:], min_scale.expand(2, 1))
    assert torch.equal(codes[1].float(), torch.zeros(3))


def test_act_quant_keeps_leading_dims() -> None:
    for fmt in FMTS:
        codes, scale = quantize_act_per_token(_randn(2, 3, 8).bfloat16(), fmt)
        assert codes.shape == (2, 3, 8) and scale.shape == (2, 3, 1) and scale.dtype == torch.float32


def test_act_int8_matches_int_quantizer_per_token() -> None:
    # Same formula as IntQuantizer(8, per_token) for tokens whose absmax is above the 1e-5 floor.
    x = _randn(5, 16)
    codes, scale = quantize_act_per_token(x, "int8")
    q = IntQuantizer(8, granularity="per_token").quantize(x)
    assert torch.equal(codes, q.codes)
    assert torch.equal(scale, q.scale)


# ------------------------------------------------------------------------------------------------------------
# W8A8Linear
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_matches_exact_reference(fmt: str) -> None:
    lin = _linear()
    layer = W8A8Linear.from_linear(lin, fmt)
    x = _randn(3, 7, 96)
    q_a, s_a = quantize_act_per_token(x, fmt)  # pinned on hand cases above
    # Reference: the GEMM of the codes in int64 (int8) or float64 (fp8: every e4m3 value and every product of
    # two is exact in float64, sums of 96 of them too), then the epilogue s_a · s_w · acc + b in float64.
    if fmt == "int8":
        acc = (q_a.long() @ layer.weight.long().T).double()
    else:
        acc = q_a.double() @ layer.weight.double().T
    ref = acc * s_a.double() * layer.weight_scale.double().T + lin.bias.detach().double()
    # The real path computes the epilogue in fp32 (and fp8 accumulates in fp32): a few fp32 ulps of the
    # largest |output| (~2), so 1e-5 absolute is ~100 ulps of slack; a wrong scale or code is off by >1e-2.
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("fmt", "bound"), [("int8", 0.02), ("fp8", 0.06)])
def test_w8a8_close_to_float_linear(fmt: str, bound: float) -> None:
    # Relative L2 error vs fp32 on Gaussian data; spec measured ~1% (int8) and ~3.6% (fp8, 3 mantissa bits).
    lin = _linear(128, 64)
    x = _randn(32, 128)
    with torch.no_grad():
        err = _rel_err(W8A8Linear.from_linear(lin, fmt)(x), lin(x))
    assert err < bound


@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_3d_input_and_small_m(fmt: str) -> None:
    lin = _linear()
    layer = W8A8Linear.from_linear(lin, fmt)
    x = _randn(2, 5, 96).bfloat16()
    out = layer(x)
    assert out.shape == (2, 5, 40) and out.dtype == torch.bfloat16
    # Tokens are quantized independently, so a single token (M=1, the padded _int_mm path) must give the
    # same row as the batch. int8 accumulates exactly in int32 -> bit-identical. fp8 accumulates in fp32 and
    # the kernel may sum in an M-dependent order: allow one bf16 ulp (2^-8 relative) after the final cast.
    single = layer(x[1, 3])
    assert single.shape == (40,)
    tol = 0.0 if fmt == "int8" else 2.0**-8
    torch.testing.assert_close(single, out[1, 3], rtol=tol, atol=tol)


@pytest.mark.parametrize("numerics", ["vidquant", "lightx2v"])
@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_all_zero_token_gives_bias(fmt: str, numerics: str) -> None:
    lin = _linear()
    x = torch.zeros(2, 96)
    x[1] = _randn(96)
    layer = W8A8Linear.from_linear(lin, fmt)
    layer.numerics = numerics
    out = layer(x)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], lin.bias.detach())  # 0 * scales + bias, exactly
    if fmt == "int8":  # also on the fp32 path every CPU has (an int8 cast would hide NaN codes)
        from vidquant.quant.int8_gemm import use_int8_path

        with use_int8_path("fp32-codes"):
            assert torch.equal(layer(x), out)


@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_state_dict_uses_lightx2v_names(fmt: str) -> None:
    lin = _linear()
    layer = W8A8Linear.from_linear(lin, fmt)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "weight_scale", "bias"]
    assert sd["weight"].dtype == (torch.int8 if fmt == "int8" else torch.float8_e4m3fn)
    assert sd["weight"].shape == (40, 96)
    assert sd["weight_scale"].dtype == torch.float32 and sd["weight_scale"].shape == (40, 1)
    # Only the codes are held: no floating (out, in) tensor anywhere in the module.
    assert not any(b.is_floating_point() and b.dtype.itemsize > 1 and b.dim() == 2 and b.shape[1] == 96
                   for b in layer.buffers())
    # Checkpoint round-trip: from_quantized (fmt inferred from the dtype) reproduces the output.
    reloaded = W8A8Linear.from_quantized(sd["weight"], sd["weight_scale"], sd["bias"])
    x = _randn(4, 96)
    assert reloaded.fmt == fmt
    assert torch.equal(reloaded(x), layer(x))


def test_w8a8_weight_codes_are_per_channel_quantizer_codes() -> None:
    lin = _linear()
    w = lin.weight.detach()
    int8 = W8A8Linear.from_linear(lin, "int8")
    q = IntQuantizer(8).quantize(w)
    assert torch.equal(int8.weight, q.codes) and torch.equal(int8.weight_scale, q.scale)
    fp8 = W8A8Linear.from_linear(lin, "fp8", use_qtorch=True)
    qf = FloatQuantizer("e4m3", use_qtorch=True).quantize(w)
    assert torch.equal(fp8.weight.float(), qf.codes.float()) and torch.equal(fp8.weight_scale, qf.scale)


def test_w8a8_from_quantized_normalises_scale_and_checks_dtype() -> None:
    codes = torch.randint(-127, 128, (8, 16), dtype=torch.int8)
    layer = W8A8Linear.from_quantized(codes, torch.rand(8).bfloat16(), None)
    assert layer.weight_scale.shape == (8, 1) and layer.weight_scale.dtype == torch.float32
    assert "bias" not in layer.state_dict()  # a None buffer is not saved, like LLMC's input_scale
    assert layer(_randn(3, 16)).shape == (3, 8) and layer.numerics == "vidquant"
    assert W8A8Linear.from_quantized(codes, torch.rand(8, 1), numerics="lightx2v").numerics == "lightx2v"
    with pytest.raises(ValueError, match="fp8"):
        W8A8Linear.from_quantized(codes, torch.rand(8, 1), fmt="fp8")
    with pytest.raises(ValueError, match="infer"):
        W8A8Linear.from_quantized(codes.float(), torch.rand(8, 1))


# ------------------------------------------------------------------------------------------------------------
# FakeQuantLinear
# ------------------------------------------------------------------------------------------------------------


def test_fake_quant_linear_hand_case() -> None:
    # Weights, int4 asymmetric per row: row 0 min -1 max 2.75 -> scale 0.25, zero 4: -1, 0, 0.625 (2.5 steps,
    # tie -> 2), 2.75 dequantize to -1, 0, 0.5, 2.75; row 1 min 1 max 4.75 -> zero clamps to 0 and 4.75
    # saturates at 15 steps = 3.75: 1, 3.75, 1, 2.
    # Activations, int8 per token: token 0 absmax 254 -> scale 2: 254, 1 (0.5 -> 0), -3 (-1.5 -> -2), 0
    # dequantize to 254, 0, -4, 0; token 1 absmax 127 -> scale 1: 2.5 -> 2, 3.5 -> 4, -1.5 -> -2.
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0, 0.0, 0.625, 2.75], [1.0, 4.75, 1.0, 2.0]]))
        lin.bias.copy_(torch.tensor([0.5, -1.0]))
    layer = FakeQuantLinear.from_linear(lin, IntQuantizer(4, symmetric=False), IntQuantizer(8, granularity="per_token"))
    assert torch.equal(layer.weight, torch.tensor([[-1.0, 0.0, 0.5, 2.75], [1.0, 3.75, 1.0, 2.0]]))
    assert dict(layer.named_parameters()) == {}  # buffers only: an eval module
    x = torch.tensor([[254.0, 1.0, -3.0, 0.0], [127.0, 2.5, 3.5, -1.5]])
    # token 0: -254 - 2 + 0.5 = -255.5 and 254 - 4 - 1 = 249; token 1: -127 + 2 - 5.5 + 0.5 = -130 and
    # 127 + 7.5 + 4 - 4 - 1 = 133.5 (all exact in fp32).
    assert torch.equal(layer(x), torch.tensor([[-255.5, 249.0], [-130.0, 133.5]]))
    # The weight is quantized once, in the source dtype, and the output keeps the input's leading dims.
    bf = FakeQuantLinear.from_linear(lin.bfloat16(), IntQuantizer(4, symmetric=False))
    assert bf.weight.dtype == torch.bfloat16 and bf(x.bfloat16()[None]).shape == (1, 2, 2)


def test_fake_quant_linear_weight_only_hand_case() -> None:
    # e4m3 per row: row 0 absmax 224 -> scale 0.5: 448, -2, 17 (tie -> 16, even) -> 224, -1, 8;
    # row 1 absmax 448 -> scale 1: 17 -> 16, -10.5 -> -10. No activation quantization: x is used as is.
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[224.0, -1.0, 8.5], [448.0, 17.0, -10.5]]))
    layer = FakeQuantLinear.from_linear(lin, FloatQuantizer("e4m3"))
    assert torch.equal(layer.weight, torch.tensor([[224.0, -1.0, 8.0], [448.0, 16.0, -10.0]]))
    # 224 - 2.02 + 4.0 and 448 + 32.32 - 5.0 with x = (1, 2.02, 0.5): 2.02 is unquantized (inexact, fp32).
    out = layer(torch.tensor([[1.0, 2.02, 0.5]]))
    torch.testing.assert_close(out, torch.tensor([[225.98, 475.32]]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_survives_module_dtype_cast(fmt: str) -> None:
    # model.to(torch.bfloat16) must not turn fp8 codes into bf16 or leave a bf16 weight_scale behind.
    lin = _linear()
    layer = W8A8Linear.from_linear(lin, fmt)
    codes = layer.weight.clone()
    x = _randn(4, 96)
    layer.to(torch.bfloat16)
    assert torch.equal(layer.weight.float(), codes.float()) and layer.weight.dtype == codes.dtype
    assert layer.weight_scale.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16
    out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_w8a8_from_linear_defaults_and_checks() -> None:
    """from_linear's defaults (int8, round-half-even fp8, not compiled), per-channel scales, no bias kept as
    None, and the constructor's checks naming what it got."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[448.0, 1.0625], [2.0, -1.0]]))  # row 0: scale 1, 1.0625 is an e4m3 tie
    int8 = W8A8Linear.from_linear(lin)
    assert (int8.fmt, int8.weight.dtype, int8.bias, int8.compiled, int8.numerics) == (
        "int8", torch.int8, None, False, "vidquant")
    assert int8.weight_scale.flatten().tolist() == pytest.approx([448 / 127, 2 / 127])  # one scale per row
    even = W8A8Linear.from_linear(lin, "fp8")  # ties to even (1.0), as torch's cast; qtorch: away from zero
    assert even.weight.float()[0, 1].item() == 1.0
    assert even.weight_scale.flatten().tolist() == pytest.approx([1, 2 / 448])
    assert W8A8Linear.from_linear(lin, "fp8", use_qtorch=True).weight.float()[0, 1].item() == 1.125
    from vidquant.quant.linear import quantize_weight_per_channel

    assert quantize_weight_per_channel(lin.weight, "fp8")[0].float()[0, 1].item() == 1.0
    codes, scale = int8.weight, int8.weight_scale
    with pytest.raises(ValueError, match="numerics must be one of"):
        W8A8Linear(codes, scale, None, "int8", numerics="vllm")
    with pytest.raises(ValueError, match=r"needs a 2-D torch.int8 weight, got torch.float32 \(2, 2\)"):
        W8A8Linear(codes.float(), scale, None, "int8")
    with pytest.raises(ValueError, match=r"weight_scale must have 2 entries, got shape \(3, 1\)"):
        W8A8Linear(codes, torch.ones(3, 1), None, "int8")


def test_int8_mm_pads_to_cudas_row_minimum_and_is_exact(monkeypatch) -> None:
    """The GPU int8 GEMM (W8A8Linear's CUDA branch; torch._int_mm runs on the CPU too): exact int32 sums of the
    products, with fewer than 17 rows padded by zero rows before the call (CUDA's _int_mm needs more than 16)
    and sliced off after. Weight codes within ±8 keep a CPU without VNNI exact too (its 16-bit pair sums of
    (a + 128) · w cannot saturate); full-range exactness is a property of the CPU class (test_int8_gemm)."""
    from vidquant.quant import linear

    seen = []
    real = torch._int_mm

    def spy(a, b):
        seen.append(a)
        return real(a, b)

    monkeypatch.setattr(torch, "_int_mm", spy)
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-8, 9, (24, 64), generator=g, dtype=torch.int8)
    for m in (1, 5, 16, 17, 40):
        a = torch.randint(-128, 128, (m, 64), generator=g, dtype=torch.int8)
        seen.clear()
        out = linear._int8_mm(a, w)
        exact = (a.long() @ w.long().t()).float()
        assert out.dtype == torch.float32 and torch.equal(out, exact), m
        (called_with,) = seen
        assert called_with.shape == (max(m, 17), 64), m
        assert torch.equal(called_with[:m], a) and not called_with[m:].any(), m  # zero padding rows


@pytest.mark.parametrize("fmt", FMTS)
def test_w8a8_dequantized_weight_is_within_half_a_step_of_the_float_one(fmt: str) -> None:
    """``dequantized_weight`` (codes × per-row scale) lands within half a grid step of the float weight: int8's
    step is the scale; e4m3's step near a value v is at most 2^-3·|v| (3 mantissa bits), times the scale below."""
    lin = _linear()
    layer = W8A8Linear.from_linear(lin, fmt)
    w, deq, s = lin.weight.detach(), layer.dequantized_weight(), layer.weight_scale
    assert deq.dtype == torch.float32 and deq.shape == w.shape
    if fmt == "int8":
        assert bool(((w - deq).abs() <= s / 2 * (1 + 1e-6)).all())
    else:
        assert bool(((w - deq).abs() <= w.abs() / 16 + s * 2.0**-9).all())  # half of 2^-3·|v|; subnormal step
    assert float((w - deq).abs().max()) > 0  # a real quantization, not a copy
