"""Pins the quantizer maths (LLMC formulas, llmc_reference §7) on hand-computed cases.

Hand-made tensors use power-of-two scales wherever possible so that ``x / scale`` is exact in fp32 and the
expected codes (including round-half-even ties) can be asserted exactly.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from vidquant.quant import (
    FloatQuantizer,
    IntQuantizer,
    QTensor,
    build_quantizer,
    build_quantizer_from_dict,
)

# ------------------------------------------------------------------------------------------------------------
# Integer, symmetric
# ------------------------------------------------------------------------------------------------------------


def test_int8_sym_per_channel_hand_case() -> None:
    # Row 0: absmax 127 -> scale exactly 1; row 1: the same row times 2^-4 -> scale exactly 1/16.
    # 2.5 -> 2, 3.5 -> 4, -1.5 -> -2, 0.5 -> 0, -126.5 -> -126: torch.round ties to even.
    row = torch.tensor([127.0, 2.5, 3.5, -1.5, 0.5, -126.5])
    w = torch.stack([row, row / 16])
    q = IntQuantizer(8).quantize(w)

    expected = torch.tensor([127, 2, 4, -2, 0, -126], dtype=torch.int8)
    assert q.codes.dtype == torch.int8
    assert torch.equal(q.codes, torch.stack([expected, expected]))
    assert q.scale.dtype == torch.float32 and q.scale.shape == (2, 1)
    assert torch.equal(q.scale, torch.tensor([[1.0], [1 / 16]]))  # exact: power-of-two scales
    assert q.zero is None
    deq = IntQuantizer(8).dequantize(q)
    assert torch.equal(deq[0], expected.float())  # exact: integers times 1
    assert torch.equal(deq[1], expected.float() / 16)


def test_int8_sym_clamps_to_minus_128_with_static_scale() -> None:
    # The scale divides by 127 but the grid goes down to -128; only static params reach the asymmetric end.
    q = IntQuantizer(8)
    x = torch.tensor([[-130.0, -128.0, -127.6, 127.4, 127.6, 130.0]])
    out = q.fake_with(x, torch.tensor([[1.0]]))
    assert torch.equal(out, torch.tensor([[-128.0, -128.0, -128.0, 127.0, 127.0, 127.0]]))


def test_int6_sym_range_and_int8_code_dtype() -> None:
    q = IntQuantizer(6)
    assert (q.qmin, q.qmax, q.code_dtype) == (-32, 31, torch.int8)  # LLMC would store int32
    qt = q.quantize(torch.tensor([[31.0, -15.5, 1.0]]))  # scale = 31/31 = 1 exactly; -15.5 -> -16 (even)
    assert torch.equal(qt.codes, torch.tensor([[31, -16, 1]], dtype=torch.int8))


# ------------------------------------------------------------------------------------------------------------
# Integer, asymmetric
# ------------------------------------------------------------------------------------------------------------


def test_int4_asym_hand_case() -> None:
    # Row 0: min -1, max 2.75 -> scale 3.75/15 = 0.25 (exact), zero = clamp(0 - round(-4), 0, 15) = 4.
    #   x/scale = -4, 0, 2.5, 11, 1.5 -> round (half even) -4, 0, 2, 11, 2 -> +4 -> 0, 4, 6, 15, 6.
    # Row 1: min 1, max 4.75 -> scale 0.25, zero = clamp(-round(4), 0, 15) = 0. LLMC does not widen the range
    #   to include 0, so 4.75/0.25 = 19 saturates at 15 and the row loses its top: pinned on purpose.
    w = torch.tensor([[-1.0, 0.0, 0.625, 2.75, 0.375], [1.0, 4.75, 1.0, 1.0, 2.0]])
    quant = IntQuantizer(4, symmetric=False)
    q = quant.quantize(w)

    assert q.codes.dtype == torch.int8  # 0..15 fits int8
    assert torch.equal(q.codes, torch.tensor([[0, 4, 6, 15, 6], [4, 15, 4, 4, 8]], dtype=torch.int8))
    assert torch.equal(q.scale, torch.tensor([[0.25], [0.25]]))
    assert torch.equal(q.zero, torch.tensor([[4.0], [0.0]]))
    assert torch.equal(
        quant.dequantize(q), torch.tensor([[-1.0, 0.0, 0.5, 2.75, 0.5], [1.0, 3.75, 1.0, 1.0, 2.0]])
    )


def test_int8_asym_uses_uint8() -> None:
    # min 0, max 255 -> scale 1, zero 0: codes are the values themselves, 255 needs uint8.
    q = IntQuantizer(8, symmetric=False).quantize(torch.tensor([[0.0, 128.0, 255.0]]))
    assert q.codes.dtype == torch.uint8
    assert torch.equal(q.codes, torch.tensor([[0, 128, 255]], dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------------------
# Granularities
# ------------------------------------------------------------------------------------------------------------


def test_per_group_hand_case() -> None:
    # group_size 2 -> scale shape (2, 2). Groups: [127/32, 32.5/32] -> scale 1/32, codes 127, 32 (tie to
    # even); [-254, 3] -> scale 2, codes -127, 2 (1.5 -> 2); [0, 0] -> floor 1e-5/127, codes 0.
    w = torch.tensor([[127 / 32, 32.5 / 32, -254.0, 3.0], [0.0, 0.0, 127.0, -1.0]])
    quant = IntQuantizer(8, granularity="per_group", group_size=2)
    q = quant.quantize(w)

    assert q.scale.shape == (2, 2)
    assert torch.equal(q.codes, torch.tensor([[127, 32, -127, 2], [0, 0, 127, -1]], dtype=torch.int8))
    assert torch.equal(q.scale[0], torch.tensor([1 / 32, 2.0]))
    assert q.scale[1, 1] == 1.0
    # 1e-5/127 is not exact in fp32: the fp32 floor 1e-5 divided by 127, to fp32 resolution.
    assert q.scale[1, 0].item() == pytest.approx(1e-5 / 127, rel=1e-6)
    expected = torch.tensor([[127 / 32, 1.0, -254.0, 4.0], [0.0, 0.0, 127.0, -1.0]])
    assert torch.equal(quant.dequantize(q), expected)


def test_per_group_indivisible_error_names_group_size() -> None:
    with pytest.raises(ValueError, match="group_size"):
        IntQuantizer(4, granularity="per_group", group_size=3).quantize(torch.ones(2, 4))
    with pytest.raises(ValueError, match="group_size"):
        IntQuantizer(4, granularity="per_group")  # group_size missing


def test_per_tensor_scalar_scale() -> None:
    x = torch.tensor([[1.0, -2.0], [127.0, 0.25]])
    q = IntQuantizer(8, granularity="per_tensor").quantize(x)
    assert q.scale.shape == ()
    assert q.scale.item() == 1.0  # absmax 127 over the whole tensor
    assert torch.equal(q.codes, torch.tensor([[1, -2], [127, 0]], dtype=torch.int8))


def test_per_token_activation_shapes_and_values() -> None:
    # [B=2, L=3, C=4]: one scale per token. Token (0, 1) has absmax 12.7 -> scale fp32(12.7)/127 ≈ 0.1, not
    # exact; its quotients 127, -63, 10, 30 are within ~1e-5 of integers, far from any rounding boundary.
    x = torch.zeros(2, 3, 4)
    x[0, 0] = torch.tensor([127.0, -63.5, 1.0, 0.0])
    x[0, 1] = torch.tensor([12.7, -6.3, 1.0, 3.0])
    x[1, 2] = torch.tensor([-254.0, 2.0, 3.0, 1.0])
    per_token = IntQuantizer(8, granularity="per_token")
    q = per_token.quantize(x)

    assert q.scale.shape == (2, 3, 1)
    assert torch.equal(q.codes[0, 0], torch.tensor([127, -64, 1, 0], dtype=torch.int8))  # -63.5 -> -64 (even)
    assert torch.equal(q.codes[1, 2], torch.tensor([-127, 1, 2, 0], dtype=torch.int8))  # scale 2: 1.5 -> 2
    assert torch.equal(q.codes[0, 1], torch.tensor([127, -63, 10, 30], dtype=torch.int8))
    assert q.scale[0, 1].item() == pytest.approx(0.1, rel=1e-6)
    assert torch.equal(q.codes[1, 0], torch.zeros(4, dtype=torch.int8))  # all-zero token
    # per_channel is the same reduction (last dim, keepdim), as in LLMC.
    assert torch.equal(IntQuantizer(8, granularity="per_channel").fake(x), per_token.fake(x))


# ------------------------------------------------------------------------------------------------------------
# All-zero slices
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quant",
    [
        IntQuantizer(8),
        IntQuantizer(4, symmetric=False),
        IntQuantizer(8, granularity="per_group", group_size=2),
        FloatQuantizer("e4m3"),
        FloatQuantizer("e5m2"),
        FloatQuantizer("e4m3", use_qtorch=True),
    ],
    ids=repr,
)
def test_all_zero_row_is_finite(quant) -> None:
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 3.0]])
    q = quant.quantize(w)
    assert torch.isfinite(q.scale).all() and (q.scale > 0).all()
    out = quant.fake(w)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(4))


# ------------------------------------------------------------------------------------------------------------
# FP8
# ------------------------------------------------------------------------------------------------------------

# Scale is exactly 1 (absmax 448 / 448), so the listed values are the fp8 inputs themselves.
# Ties: 17 between 16 and 18; -10.5 between -10 and -11; 1.0625 between 1 and 1.125; 2^-10 between 0 and the
# smallest subnormal 2^-9. qtorch rounds them away from zero, torch's cast to the even mantissa.
E4M3_TIES = torch.tensor([[448.0, 17.0, -10.5, 1.0625, 2.0**-10, 18.0, 3.0]])
E4M3_QTORCH = torch.tensor([[448.0, 18.0, -11.0, 1.125, 2.0**-9, 18.0, 3.0]])
E4M3_NATIVE = torch.tensor([[448.0, 16.0, -10.0, 1.0, 0.0, 18.0, 3.0]])


def test_fp8_e4m3_ties_native_vs_qtorch() -> None:
    native = FloatQuantizer("e4m3", use_qtorch=False).quantize(E4M3_TIES)
    qtorch = FloatQuantizer("e4m3", use_qtorch=True).quantize(E4M3_TIES)
    assert native.codes.dtype == qtorch.codes.dtype == torch.float8_e4m3fn
    assert native.scale.item() == qtorch.scale.item() == 1.0
    assert torch.equal(native.codes.float(), E4M3_NATIVE)
    assert torch.equal(qtorch.codes.float(), E4M3_QTORCH)


def test_fp8_e5m2_ties_native_vs_qtorch() -> None:
    # e5m2 has 2 mantissa bits: 18 lies halfway between 16 and 20 -> qtorch 20, torch 16 (even).
    x = torch.tensor([[57344.0, 18.0, -18.0, 20.0]])
    native = FloatQuantizer("e5m2").quantize(x)
    qtorch = FloatQuantizer("e5m2", use_qtorch=True).quantize(x)
    assert native.codes.dtype == torch.float8_e5m2
    assert native.scale.item() == 1.0
    assert torch.equal(native.codes.float(), torch.tensor([[57344.0, 16.0, -16.0, 20.0]]))
    assert torch.equal(qtorch.codes.float(), torch.tensor([[57344.0, 20.0, -20.0, 20.0]]))


def test_fp8_native_and_qtorch_agree_except_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=gen) * torch.logspace(-3, 2, 64).unsqueeze(1)  # many binades
    native = FloatQuantizer("e4m3").quantize(x)
    qtorch = FloatQuantizer("e4m3", use_qtorch=True).quantize(x)
    assert torch.equal(native.scale, qtorch.scale)
    a, b = native.codes.float(), qtorch.codes.float()
    differ = a != b
    # Any disagreement must be an exact tie (the quotient is equidistant from both codes), with qtorch the
    # one farther from zero; random fp32 data has essentially none (a tie needs 20 trailing mantissa zeros).
    y = x / native.scale
    assert torch.equal((y - a).abs()[differ], (y - b).abs()[differ])
    assert (b.abs() > a.abs())[differ].all()
    assert differ.sum() <= 2


def test_fp8_scale_and_dequant() -> None:
    w = torch.tensor([[224.0, -1.0], [0.5, 0.25]])
    quant = FloatQuantizer("e4m3")
    q = quant.quantize(w)
    # scale = absmax / 448: row 0 -> 0.5 (exact), row 1 -> 0.5/448 correctly rounded to fp32 (float64 quotient
    # rounded once to fp32: 53 >= 2·24 + 2 bits, so that is the fp32 division's result).
    assert q.scale[0].item() == 0.5
    assert q.scale[1].item() == torch.tensor(0.5 / 448, dtype=torch.float64).float().item()
    assert torch.equal(q.codes.float()[0], torch.tensor([448.0, -2.0]))
    torch.testing.assert_close(quant.dequantize(q), w)  # every value is on the grid: only fp32 rounding


def test_fp8_static_scale_clamps_before_cast() -> None:
    out = FloatQuantizer("e4m3").fake_with(torch.tensor([[1000.0, -1000.0, 100.0]]), torch.tensor([[1.0]]))
    assert torch.equal(out, torch.tensor([[448.0, -448.0, 96.0]]))  # 100 -> 96 (e4m3 spacing 16 at 64..128)


# ------------------------------------------------------------------------------------------------------------
# Static params (GPTQ-style) and dtype handling
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quant",
    [
        IntQuantizer(4, symmetric=False),
        IntQuantizer(8),
        IntQuantizer(4, granularity="per_group", group_size=4),
        FloatQuantizer("e4m3"),
    ],
    ids=repr,
)
def test_fake_with_column_by_column_matches_fake(quant) -> None:
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    scale, zero = quant.qparams(w)
    g = quant.group_size if quant.granularity == "per_group" else w.shape[1]
    cols = [
        quant.fake_with(
            w[:, i : i + 1],
            scale[:, i // g : i // g + 1],
            None if zero is None else zero[:, i // g : i // g + 1],
        )
        for i in range(w.shape[1])
    ]
    # Same formula with the same fp32 params, element by element: bit-identical.
    assert torch.equal(torch.cat(cols, dim=1), quant.fake(w))
    assert torch.equal(quant.fake_with(w, scale, zero), quant.fake(w))  # per-group-shaped params expand
    static, dynamic = quant.quantize_with(w, scale, zero), quant.quantize(w)
    assert torch.equal(static.codes.float(), dynamic.codes.float())
    assert torch.equal(static.scale, dynamic.scale)


def test_fake_keeps_dtype_and_fp32_scales() -> None:
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    for quant in (IntQuantizer(8), FloatQuantizer("e4m3")):
        assert quant.fake(w).dtype == torch.bfloat16
        assert quant.quantize(w).scale.dtype == torch.float32


def _bf16(v: float) -> float:
    """Round a float64 value to bf16 (round to nearest even) and back."""
    return torch.tensor(v, dtype=torch.float64).to(torch.bfloat16).item()


def test_bf16_compute_reproduces_llmc_arithmetic() -> None:
    # LLMC: absmax, scale and x/scale all in bf16 (llmc_reference §7.2 "Precision"). Reference: every step in
    # float64 (Python floats), rounded to bf16 where LLMC rounds; a float64 quotient rounded to bf16 is the
    # correctly rounded bf16 quotient (53 >= 2·8 + 2 bits, so the double rounding is harmless), and Python's
    # round() ties to even like torch.round.
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    q = IntQuantizer(8, compute_dtype=torch.bfloat16).quantize(w)
    assert q.scale.dtype == torch.bfloat16
    codes_differ_from_fp32 = False
    for r, row in enumerate(w.tolist()):
        scale = _bf16(max(abs(v) for v in row) / 127)
        assert q.scale[r, 0].item() == scale
        codes = [max(-128, min(127, round(_bf16(v / scale)))) for v in row]
        assert q.codes[r].tolist() == codes, r
        codes_differ_from_fp32 |= codes != [max(-128, min(127, round(v / (max(map(abs, row)) / 127)))) for v in row]
    assert codes_differ_from_fp32  # bf16 arithmetic changes some codes here, so the test tells the two apart


def test_qtensor_is_self_describing() -> None:
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    q = IntQuantizer(4, symmetric=False, granularity="per_group", group_size=4).quantize(x)
    assert isinstance(q, QTensor) and q.granularity == "per_group" and q.group_size == 4
    assert q.zero.shape == q.scale.shape == (3, 2)
    assert q.dequantize().dtype == torch.float64


# ------------------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------------------


def test_build_quantizer_from_spec_and_dict() -> None:
    spec = SimpleNamespace(
        quant_type="int-quant", bit=4, symmetric=False, granularity="per_group", group_size=64,
        use_qtorch=False,
    )
    q = build_quantizer(spec)
    assert isinstance(q, IntQuantizer)
    assert (q.bit, q.symmetric, q.granularity, q.group_size) == (4, False, "per_group", 64)

    f = build_quantizer_from_dict(
        {"quant_type": "float-quant", "bit": "e4m3", "symmetric": True, "granularity": "per_token",
         "use_qtorch": True, "calib_algo": "minmax"}
    )
    assert isinstance(f, FloatQuantizer)
    assert (f.fmt, f.granularity, f.use_qtorch) == ("e4m3", "per_token", True)

    d = build_quantizer_from_dict({"bit": 8}, compute_dtype=torch.bfloat16)
    assert isinstance(d, IntQuantizer) and d.granularity == "per_channel"
    assert d.compute_dtype == torch.bfloat16


def test_build_quantizer_rejects_unrounded_zero_point() -> None:
    with pytest.raises(NotImplementedError, match="round_zp"):
        build_quantizer_from_dict({"bit": 4, "symmetric": False, "round_zp": False})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quant_type": "nf4", "bit": 4},
        {"quant_type": "float-quant", "bit": 8},
        {"quant_type": "int-quant", "bit": 9},
    ],
)
def test_build_quantizer_rejects_bad_specs(kwargs) -> None:
    with pytest.raises(ValueError):
        build_quantizer_from_dict(kwargs)


def test_build_quantizer_from_project_quant_spec() -> None:
    from vidquant.config import QuantSpec

    spec = QuantSpec(quant_type="float-quant", bit="e4m3", granularity="per_token", use_qtorch=True)
    q = build_quantizer(spec)
    assert isinstance(q, FloatQuantizer) and q.granularity == "per_token" and q.use_qtorch
    q = build_quantizer(QuantSpec(bit=4, symmetric=False, granularity="per_group", group_size=64))
    assert isinstance(q, IntQuantizer) and (q.bit, q.symmetric, q.group_size) == (4, False, 64)


# ------------------------------------------------------------------------------------------------------------
# Edges found by mutation testing (make mutation)
# ------------------------------------------------------------------------------------------------------------


def test_fp8_e5m2_static_scale_clamps_both_ends() -> None:
    # e5m2's cast overflows to ±inf (e4m3fn's saturates), so only the clamp keeps ±1e6 finite: ±57344.
    out = FloatQuantizer("e5m2").fake_with(torch.tensor([[1e6, -1e6, 3.0]]), torch.tensor([[1.0]]))
    assert torch.equal(out, torch.tensor([[57344.0, -57344.0, 3.0]]))


def test_bit_and_group_size_limits() -> None:
    q2 = IntQuantizer(2)  # the smallest width: grid -2..1
    assert (q2.qmin, q2.qmax) == (-2, 1)
    # absmax 2 -> scale 2/qmax = 2: 2 -> 1, -1 -> -0.5 -> 0 (even), -2 -> -1; with scale 1 the ends clamp.
    codes = q2.quantize(torch.tensor([[2.0, -1.0, -2.0]])).codes
    assert torch.equal(codes, torch.tensor([[1, 0, -1]], dtype=torch.int8))
    assert torch.equal(q2.fake_with(torch.tensor([[5.0, -5.0]]), torch.tensor([[1.0]])), torch.tensor([[1.0, -2.0]]))
    for bit in (1, 9):
        with pytest.raises(ValueError, match="bit"):
            IntQuantizer(bit)
    with pytest.raises(ValueError, match="group_size"):
        IntQuantizer(4, granularity="per_group", group_size=0)
    with pytest.raises(ValueError, match="compute_dtype"):
        IntQuantizer(8, compute_dtype=torch.int32)
    with pytest.raises(ValueError, match="granularity"):
        IntQuantizer(8, granularity="per_row")
    with pytest.raises(ValueError, match="fmt"):
        FloatQuantizer("e3m4")
    with pytest.raises(ValueError, match="zero"):
        FloatQuantizer("e4m3").quantize_with(torch.ones(1, 2), torch.ones(1, 1), torch.zeros(1, 1))


def test_fp8_per_group_and_bf16_compute() -> None:
    # Groups of 2: [448, -1] -> scale 1; [0.5, 0.25] -> scale 0.5/448; [224, 3.5] -> 0.5; [1, -2] -> 2/448.
    w = torch.tensor([[448.0, -1.0, 0.5, 0.25], [224.0, 3.5, 1.0, -2.0]])
    f = FloatQuantizer("e4m3", granularity="per_group", group_size=2)
    assert f.symmetric is True and f.group_size == 2
    q = f.quantize(w)
    assert q.scale.shape == (2, 2)
    assert torch.equal(q.scale[:, 0], torch.tensor([1.0, 0.5]))
    assert torch.equal(q.codes.float()[:, :2], torch.tensor([[448.0, -1.0], [448.0, 7.0]]))
    torch.testing.assert_close(f.dequantize(q), w)
    fb = FloatQuantizer("e4m3", compute_dtype=torch.bfloat16)
    assert fb.quantize(w).scale.dtype == torch.bfloat16 and fb.fake(w).dtype == torch.float32


def test_reprs_name_the_settings() -> None:
    assert repr(IntQuantizer(4, symmetric=False)) == "IntQuantizer(bit=4, symmetric=False, granularity='per_channel')"
    assert repr(IntQuantizer(8, granularity="per_group", group_size=64)) == (
        "IntQuantizer(bit=8, symmetric=True, granularity='per_group', group_size=64)")
    assert repr(FloatQuantizer("e5m2", use_qtorch=True)) == (
        "FloatQuantizer(fmt='e5m2', use_qtorch=True, granularity='per_channel')")


def test_build_quantizer_passes_every_field() -> None:
    base = dict(quant_type="int-quant", bit=8, symmetric=True, granularity="per_channel", group_size=-1,
                use_qtorch=False)
    q = build_quantizer(SimpleNamespace(**base), compute_dtype=torch.bfloat16)
    assert isinstance(q, IntQuantizer) and q.symmetric is True and q.compute_dtype == torch.bfloat16
    spec = SimpleNamespace(**{**base, "quant_type": "float-quant", "bit": "e5m2", "granularity": "per_group",
                              "group_size": 32})
    f = build_quantizer(spec, compute_dtype=torch.bfloat16)
    assert isinstance(f, FloatQuantizer)
    assert (f.fmt, f.granularity, f.group_size, f.compute_dtype) == ("e5m2", "per_group", 32, torch.bfloat16)


def test_float_quant_warns_only_when_asked_for_asymmetric() -> None:
    spec = dict(quant_type="float-quant", bit="e4m3", granularity="per_channel", group_size=-1, use_qtorch=False)
    with pytest.warns(UserWarning, match="always symmetric"):
        build_quantizer(SimpleNamespace(**spec, symmetric=False))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_quantizer(SimpleNamespace(**spec, symmetric=True))  # no warning


def test_asymmetric_zero_point_clamps_at_qmax() -> None:
    # An all-negative row: min -5, max -1.25 -> scale 3.75/15 = 0.25, qmin - round(min/scale) = 20 clamps to 15
    # (LLMC does not widen the range to 0), so -5 saturates at code 0 = -3.75 and -1.25 -> code 10.
    q = IntQuantizer(4, symmetric=False).quantize(torch.tensor([[-5.0, -1.25]]))
    assert q.zero.item() == 15.0 and q.scale.item() == 0.25
    assert torch.equal(q.codes, torch.tensor([[0, 10]], dtype=torch.int8))
    assert torch.equal(q.dequantize(), torch.tensor([[-3.75, -1.25]]))


@pytest.mark.parametrize("shape", [(8,), (3, 8), (2, 3, 8)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("group_size", [2, 4])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_group_static_params_of_any_rank(shape, group_size, symmetric) -> None:
    """qparams returns (*lead, last // g) and quantize_with expands it back to the groups of x, for any rank."""
    quant = IntQuantizer(4, symmetric=symmetric, granularity="per_group", group_size=group_size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    scale, zero = quant.qparams(x)
    assert scale.shape == (*shape[:-1], shape[-1] // group_size)
    assert (zero is None) == symmetric and (zero is None or zero.shape == scale.shape)
    static = quant.quantize_with(x, scale, zero)
    assert static.codes.dtype == torch.int8 and static.codes.shape == x.shape
    assert torch.equal(static.codes, quant.quantize(x).codes)
    assert torch.equal(quant.fake_with(x, scale, zero), quant.fake(x))


def test_compute_dtype_applies_to_static_params_and_output_dtype() -> None:
    # bf16 arithmetic (LLMC parity) on an fp32 tensor: qparams, quantize_with and fake_with all compute in bf16,
    # so they reproduce quantize()'s bf16 codes, which differ from the fp32 ones here; outputs keep x's dtype.
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(3))
    bf = IntQuantizer(8, compute_dtype=torch.bfloat16)
    scale, _ = bf.qparams(x)
    assert scale.dtype == torch.bfloat16
    static = bf.quantize_with(x, scale.float())
    assert static.scale.dtype == torch.bfloat16
    assert torch.equal(static.codes, bf.quantize(x).codes)
    assert not torch.equal(static.codes, IntQuantizer(8).quantize(x).codes)
    assert static.dequantize().dtype == torch.float32
    assert bf.fake_with(x.bfloat16(), scale).dtype == torch.bfloat16


def test_per_group_asymmetric_hand_case() -> None:
    # Groups of 2, int4 asymmetric: [-1, 2.75] -> scale 0.25, zero 4, codes 0, 15; [1, 4.75] -> scale 0.25,
    # zero clamps to 0, codes 4, 15 (4.75 saturates at 3.75). Each group dequantizes with its own zero point.
    quant = IntQuantizer(4, symmetric=False, granularity="per_group", group_size=2)
    q = quant.quantize(torch.tensor([[-1.0, 2.75, 1.0, 4.75]]))
    assert torch.equal(q.zero, torch.tensor([[4.0, 0.0]])) and torch.equal(q.scale, torch.tensor([[0.25, 0.25]]))
    assert torch.equal(q.codes, torch.tensor([[0, 15, 4, 15]], dtype=torch.int8))
    assert torch.equal(q.dequantize(), torch.tensor([[-1.0, 2.75, 1.0, 3.75]]))


def test_defaults_and_group_size_normalisation() -> None:
    assert FloatQuantizer().fmt == "e4m3" and FloatQuantizer().code_dtype == torch.float8_e4m3fn
    assert IntQuantizer(8, group_size=64).group_size == -1  # only per_group keeps a group size
    one = IntQuantizer(8, granularity="per_group", group_size=1)  # one scale per element is allowed
    x = torch.tensor([[3.0, -0.5]])
    assert one.qparams(x)[0].shape == (1, 2) and torch.equal(one.quantize(x).codes, torch.tensor([[127, -127]],
                                                                                                   dtype=torch.int8))


@pytest.mark.parametrize(("shape", "last"), [((2, 3, 5), 5), ((), 0)], ids=["3d", "scalar"])
def test_per_group_indivisible_message_names_the_last_dim(shape, last) -> None:
    quant = IntQuantizer(4, granularity="per_group", group_size=2)
    msg = f"per_group: last dim (in_features) = {last} is not divisible by group_size = 2"
    with pytest.raises(ValueError, match=re.escape(msg)):
        quant.quantize(torch.ones(shape))


def test_builders_send_each_quant_type_to_its_format():
    """build_quantizer_from_dict: mx-quant / nvfp4-quant go to the block formats with the compute dtype; float-quant
    keeps `static` (fp8-pertensor's calibrated activation scale); a missing `static` means dynamic."""
    from vidquant.quant import build_quantizer_from_dict
    from vidquant.quant.blockfmt import MXQuantizer, NVFP4Quantizer

    mx = build_quantizer_from_dict({"quant_type": "mx-quant", "bit": "e4m3"}, compute_dtype=torch.bfloat16)
    nv = build_quantizer_from_dict({"quant_type": "nvfp4-quant", "bit": "e2m1"}, compute_dtype=torch.bfloat16)
    assert type(mx) is MXQuantizer and type(nv) is NVFP4Quantizer
    assert mx.compute_dtype == nv.compute_dtype == torch.bfloat16
    static = build_quantizer_from_dict({"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_tensor",
                                        "static": True})
    assert static.static is True and ", use_qtorch=False, static=True, granularity=" in repr(static), repr(static)
    dynamic = build_quantizer_from_dict({"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_tensor"})
    assert dynamic.static is False and "static" not in repr(dynamic)


@pytest.mark.parametrize("fmt, granularity", [("e5m2", "per_tensor"), ("e4m3", "per_token"), ("e4m3", "per_channel")])
def test_static_fp8_scales_are_e4m3_per_tensor_only(fmt, granularity):
    with pytest.raises(ValueError, match=f"static scales are e4m3 per_tensor only .fp8-pertensor., got {fmt} "
                                         f"{granularity}"):
        FloatQuantizer(fmt, granularity=granularity, static=True)
    assert FloatQuantizer(fmt, granularity=granularity).static is False
    assert FloatQuantizer("e4m3", granularity="per_tensor", static=1).static is True
