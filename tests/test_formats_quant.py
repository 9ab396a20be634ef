"""Block-scaled formats (vidquant.quant.blockfmt) against hand-computed cases."""

import pytest
import torch

from vidquant.quant import FloatQuantizer, IntQuantizer
from vidquant.quant.blockfmt import (
    MINIFLOATS,
    MXQuantizer,
    NVFP4Quantizer,
    e8m0_bits,
    e8m0_value,
    minifloat_bits,
    minifloat_from_bits,
    mx_block_scale,
    nvfp4_block_scale,
    nvfp4_fake_static,
    nvfp4_global_scale,
    round_to_minifloat,
)


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


# ------------------------------------------------------------------------------------------- element rounding
def test_e2m1_grid_ties_to_even_and_saturation():
    # midpoints of the e2m1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}: each goes to the neighbour with an even mantissa
    y = t(0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.26, 6.0, 7.0, 1e9, -0.75, -5.5)
    assert round_to_minifloat(y, "e2m1").tolist() == [0, 1, 1, 2, 2, 4, 4, 0.5, 6, 6, 6, -1, -6]


def test_fp6_grids_hand_cases():
    # e2m3: spacing 0.125 below 2, 0.25 in [2, 4), 0.5 in [4, 7.5]; max 7.5
    assert round_to_minifloat(t(0.0625, 0.1875, 2.125, 2.375, 7.75, 9.0), "e2m3").tolist() == \
        [0.0, 0.25, 2.0, 2.5, 7.5, 7.5]
    # e3m2: bias 3, smallest subnormal 2^-4, max 28; 26 is a tie between 24 and 28 -> 24 (even mantissa)
    assert round_to_minifloat(t(0.03125, 0.09375, 26.0, 30.0, 27.0), "e3m2").tolist() == \
        [0.0, 0.125, 24.0, 28.0, 28.0]


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_elements_match_torch_cast(fmt):
    x = torch.randn(20000) * 100
    m = MINIFLOATS[fmt]
    ref = x.clamp(-m.max, m.max).to(m.container).float()
    assert torch.equal(round_to_minifloat(x, fmt), ref)


@pytest.mark.parametrize("fmt", sorted(MINIFLOATS))
def test_bit_codes_round_trip_and_known_codes(fmt):
    x = torch.randn(5000) * 10
    v = round_to_minifloat(x, fmt)
    assert torch.equal(minifloat_from_bits(minifloat_bits(v, fmt), fmt), v)
    assert torch.equal(v.to(MINIFLOATS[fmt].container).float(), v)  # the float8 container is lossless


def test_e2m1_bit_codes_as_nvidia_table():
    # 0101 = 3.0, 0001 = 0.5 (subnormal), 1111 = -6.0, 1000 = -0
    assert minifloat_bits(t(3.0, 0.5, -6.0, -0.0, 6.0), "e2m1").tolist() == [0b0101, 0b0001, 0b1111, 0b1000, 0b0111]
    # e4m3 bits agree with torch's float8_e4m3fn byte
    v = round_to_minifloat(torch.randn(1000) * 50, "e4m3")
    assert torch.equal(minifloat_bits(v, "e4m3"), v.to(torch.float8_e4m3fn).view(torch.uint8))


# ------------------------------------------------------------------------------------------- MX scales
def test_mx_scale_ceil_rule_never_saturates():
    # absmax / 6 = 1 -> 2^0; 6.1 / 6 -> 2^1; 1 / 6 -> 2^-2 (1/4 >= 1/6); zero block -> 2^-127 (E8M0 code 0)
    s = mx_block_scale(t(6.0, 6.1, 1.0, 0.0), "e2m1", "ceil")
    assert s.tolist() == [1.0, 2.0, 0.25, 2.0**-127]
    assert e8m0_bits(s).tolist() == [127, 128, 125, 0]
    assert torch.equal(e8m0_value(e8m0_bits(s)), s)


def test_mx_scale_floor_rule_is_ocp_and_saturates():
    # OCP: 2^(floor(log2 amax) - emax_elem), emax(e2m1) = 2: amax 6.1 -> 2^(2-2) = 1, so 6.1 saturates to 6
    s = mx_block_scale(t(6.1, 448.0), "e2m1", "floor")
    assert s.tolist() == [1.0, 64.0]
    q = MXQuantizer("e2m1", scale_rule="floor")
    x = torch.zeros(1, 32)
    x[0, 0] = 6.1
    assert q.fake(x)[0, 0].item() == 6.0


def test_mxfp4_quantize_hand_block():
    q = MXQuantizer("e2m1")
    x = torch.zeros(1, 32)
    x[0, :4] = t(12.0, 5.0, -1.0, 0.4)  # absmax 12 -> scale 2 (12/6 = 2); x/2 = 6, 2.5, -0.5, 0.2
    qt = q.quantize(x)
    assert qt.scale.tolist() == [[2.0]]
    assert qt.codes.float()[0, :4].tolist() == [6.0, 2.0, -0.5, 0.0]
    assert qt.dequantize()[0, :4].tolist() == [12.0, 4.0, -1.0, 0.0]


def test_mx_zero_and_subnormal_blocks():
    q = MXQuantizer("e4m3")
    x = torch.zeros(2, 32)
    x[1, 3] = 1e-40  # an fp32 subnormal: scale 2^-127 (the smallest E8M0), element rounds to a subnormal e4m3
    qt = q.quantize(x)
    assert qt.scale[0, 0].item() == 2.0**-127 and torch.count_nonzero(qt.codes.float()[0]) == 0
    assert torch.isfinite(qt.dequantize()).all()
    assert qt.dequantize()[1, 3].item() == pytest.approx(1e-40, rel=0.07)


def test_mx_block_boundaries_are_independent():
    q = MXQuantizer("e2m1")
    x = torch.ones(1, 64)
    x[0, 40] = 96.0  # second block only
    s = q.qparams(x)[0]
    assert s.tolist() == [[0.25, 16.0]]


# ------------------------------------------------------------------------------------------- NVFP4
def test_nvfp4_two_level_scale_hand_case():
    q = NVFP4Quantizer()
    x = torch.zeros(1, 32)
    x[0, 0] = 12.0  # tensor absmax 12 -> g = 2688 / 12 = 224
    x[0, 16] = 3.0  # block 2: e4m3(224 * 3 / 6) = e4m3(112) = 112
    qt = q.quantize(x)
    assert qt.global_scale.item() == 224.0
    e4m3_scales = (qt.scale * qt.global_scale).tolist()[0]
    assert e4m3_scales == pytest.approx([448.0, 112.0])
    assert qt.codes.float()[0, [0, 16]].tolist() == [6.0, 6.0]
    assert qt.dequantize()[0, [0, 16]].tolist() == pytest.approx([12.0, 3.0])


def test_nvfp4_block_scale_rounds_to_e4m3_and_elements_saturate():
    q = NVFP4Quantizer()
    x = torch.zeros(1, 32)
    x[0, 0] = 100.0  # g = 26.88
    x[0, 16] = 7.0  # g * 7 / 6 = 31.36 -> e4m3 32 (spacing 2 in [16, 32)); x * g / 32 = 5.88 -> 6
    x[0, 17] = -6.99
    qt = q.quantize(x)
    assert (qt.scale[0, 1] * qt.global_scale).item() == pytest.approx(32.0)
    assert qt.codes.float()[0, 16:18].tolist() == [6.0, -6.0]


def test_nvfp4_zero_block_and_fixed_grid_recovers_global_scale():
    q = NVFP4Quantizer()
    w = torch.randn(8, 64)
    w[:, 16:32] = 0
    qt = q.quantize(w)
    assert torch.all(qt.scale[:, 1] == 0) and torch.count_nonzero(qt.codes.float()[:, 16:32]) == 0
    fixed = q.quantize_with(w, *q.qparams(w))
    assert torch.equal(fixed.codes.float(), qt.codes.float())
    assert fixed.global_scale.item() == pytest.approx(qt.global_scale.item(), rel=1e-6)


def test_nvfp4_static_activation_fake_matches_weight_path():
    x = torch.randn(3, 32)
    g = torch.tensor(2688.0) / x.abs().amax()
    torch.testing.assert_close(nvfp4_fake_static(x, g), NVFP4Quantizer().fake(x), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------- int4 g128, fp8 static
def test_int4_group128_hand_case():
    q = IntQuantizer(4, symmetric=True, granularity="per_group", group_size=128)
    w = torch.zeros(1, 256)
    w[0, 0], w[0, 1], w[0, 128] = 7.0, 2.5, -1.0  # group 1: scale 1, 2.5 -> 2 (ties to even); group 2: scale 1/7
    qt = q.quantize(w)
    assert qt.scale[0].tolist() == pytest.approx([1.0, 1.0 / 7])
    assert qt.codes[0, :2].tolist() == [7, 2] and qt.codes[0, 128].item() == -7


def test_fp8_per_tensor_static_activation_saturates():
    aq = FloatQuantizer("e4m3", granularity="per_tensor")
    x = t(1.0, 10.0, -1000.0)
    q = aq.quantize_with(x, torch.tensor(0.5))  # x / 0.5, clamped to ±448 as lightx2v's fp8-pertensor act quant
    assert q.codes.float().tolist() == [2.0, 20.0, -448.0]


# ------------------------------------------------------------------------------------------- the interface
# What the rest of vidquant reads from a block quantizer (codes' container dtype, the QTensor fields the export
# and GPTQ use, compute_dtype, the scale rule, symmetric for AWQ's clip search), and the edges of the scale maths.
def test_bit_codes_are_uint8_and_formats_may_be_given_as_objects():
    fmt = MINIFLOATS["e2m1"]
    v = t(0.0, 0.5, -1.5, 6.0)
    bits = minifloat_bits(v, fmt)
    assert bits.dtype == torch.uint8 and bits.tolist() == [0b0000, 0b0001, 0b1011, 0b0111]
    assert minifloat_from_bits(bits, fmt).tolist() == v.tolist()
    with pytest.raises(IndexError):  # a code outside the format's 1 + e + m bits decodes to nothing
        minifloat_from_bits(torch.tensor([16], dtype=torch.uint8), "e2m1")


def test_mx_scale_default_rule_is_ceil_and_e4m3_e3m2_divide_by_their_max():
    a = t(448.0, 449.0, 28.0, 29.0, 1.0)
    assert torch.equal(mx_block_scale(a, "e4m3"), mx_block_scale(a, "e4m3", "ceil"))
    # ceil(log2(a / max)): 448 / 448 = 1 -> 2^0; 449 / 448 -> 2^1; 1 / 448 -> 2^-8
    assert mx_block_scale(a, "e4m3").tolist() == [1.0, 2.0, 2.0**-4, 2.0**-3, 2.0**-8]
    assert mx_block_scale(a, "e3m2").tolist() == [16.0, 32.0, 1.0, 2.0, 2.0**-4]


def test_mx_scale_clamps_to_the_smallest_e8m0_and_codes_saturate():
    tiny = t(2.0**-140, 0.0)  # k = -149 before the clamp
    assert mx_block_scale(tiny, "e4m3").tolist() == [2.0**-127, 2.0**-127]
    assert mx_block_scale(tiny, "e4m3", "floor").tolist() == [2.0**-127, 2.0**-127]
    # absmax / max_elem underflowing to 0 in fp32 (a few subnormal ulps) is the smallest scale too, not 2^0
    ulps = t(2.0**-149, 3 * 2.0**-149, 1e-43)
    for elem in ("e2m1", "e4m3"):
        assert mx_block_scale(ulps, elem).tolist() == [2.0**-127] * 3, elem
    codes = e8m0_bits(t(2.0**-127, 2.0**-130, 1.0, 2.0**127))
    assert codes.dtype == torch.uint8 and codes.tolist() == [0, 0, 127, 254]


def test_nvfp4_global_scale_edges():
    assert nvfp4_global_scale(torch.zeros(4)).item() == 2688.0  # all-zero tensor: absmax taken as 1
    assert nvfp4_global_scale(t(0.5, -0.25)).item() == 5376.0  # 2688 / 0.5 (absmax below 1 too)
    g = nvfp4_global_scale(torch.tensor([3.0], dtype=torch.bfloat16))  # computed in bf16, returned as fp32
    assert g.dtype == torch.float32 and g.item() == torch.tensor(896.0, dtype=torch.bfloat16).item()


def test_nvfp4_block_scale_saturates_at_e4m3_max():
    # a static global scale calibrated on smaller inputs: g * a / 6 = 2688 / 1000 * 6000 / 6 = 2688 > 448
    s = nvfp4_block_scale(t(6000.0, 1000.0), torch.tensor(2688.0 / 1000.0))
    assert s.dtype == torch.float8_e4m3fn and s.float().tolist() == [448.0, 448.0]


@pytest.mark.parametrize("elem, fmt, container", [("e4m3", "mxfp8", torch.float8_e4m3fn),
                                                  ("e5m2", "mxfp8", torch.float8_e5m2),
                                                  ("e3m2", "mxfp6", torch.float8_e4m3fn),
                                                  ("e2m3", "mxfp6", torch.float8_e4m3fn),
                                                  ("e2m1", "mxfp4", torch.float8_e4m3fn)])
def test_mx_quantizer_fields(elem, fmt, container):
    q = MXQuantizer(elem)
    x = torch.randn(3, 64)
    for qt in (q.quantize(x), q.quantize_with(x, *q.qparams(x))):
        assert (qt.fmt, qt.granularity, qt.group_size, qt.dtype, qt.codes.dtype) == (fmt, "per_group", 32,
                                                                                   torch.float32, container)
        assert torch.equal(qt.dequantize(), q.fake(x))
    assert q.symmetric is True
    with pytest.raises(ValueError, match="symmetric"):
        q.quantize_with(x, q.qparams(x)[0], torch.zeros_like(q.qparams(x)[0]))


def test_mx_quantizer_defaults_rule_and_compute_dtype():
    q = MXQuantizer()
    assert (q.elem.name, q.fmt, q.block_size, q.scale_rule) == ("e4m3", "mxfp8", 32, "ceil")
    with pytest.raises(ValueError, match="scale rule"):
        MXQuantizer("e4m3", scale_rule="nearest")
    x = torch.randn(2, 64) * 100
    absmax = x.abs().reshape(2, 2, 32).amax(-1)
    assert torch.equal(MXQuantizer("e2m1", scale_rule="floor").qparams(x)[0], mx_block_scale(absmax, "e2m1", "floor"))
    assert MXQuantizer("e4m3", compute_dtype=torch.float64).qparams(x)[0].dtype == torch.float64


def test_nvfp4_quantizer_fields_compute_dtype_and_zero_tensor():
    q = NVFP4Quantizer()
    x = torch.randn(3, 32)
    for qt in (q.quantize(x), q.quantize_with(x, *q.qparams(x))):
        assert (qt.fmt, qt.granularity, qt.group_size, qt.dtype, qt.codes.dtype) == (
            "nvfp4", "per_group", 16, torch.float32, torch.float8_e4m3fn)
        torch.testing.assert_close(qt.dequantize(), q.fake(x), rtol=1e-6, atol=0)
    assert NVFP4Quantizer(compute_dtype=torch.float64).qparams(x)[0].dtype == torch.float64
    assert NVFP4Quantizer(compute_dtype=torch.float64).quantize(x).scale.dtype == torch.float64
    with pytest.raises(ValueError, match="symmetric"):
        q.quantize_with(x, q.qparams(x)[0], torch.zeros_like(q.qparams(x)[0]))
    zeros = torch.zeros(2, 16)  # all-zero: the same finite global scale both ways
    assert q.quantize(zeros).global_scale.item() == 2688.0
    assert q.quantize_with(zeros, *q.qparams(zeros)).global_scale.item() == 2688.0


def test_block_with_zero_scale_gets_zero_codes():
    # NVFP4: a block 1e-6 of the tensor's absmax has an e4m3 block scale that underflows to 0; its codes are 0
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 16] = 1e6, 0.5
    qt = NVFP4Quantizer().quantize(x)
    assert qt.scale[0, 1].item() == 0 and torch.count_nonzero(qt.codes.float()[0, 16:]) == 0


def test_build_block_quantizer_from_config_specs():
    from types import SimpleNamespace

    from vidquant.config import QuantSpec
    from vidquant.quant.blockfmt import build_block_quantizer

    nv = build_block_quantizer(QuantSpec(quant_type="nvfp4-quant", bit="e2m1", granularity="per_block"))
    assert type(nv) is NVFP4Quantizer and nv.block_size == 16 and nv.compute_dtype == torch.float32
    assert repr(nv) == "NVFP4Quantizer(elem='e2m1', global_scale=2688/absmax, granularity='per_group', group_size=16)"
    mx = build_block_quantizer(QuantSpec(quant_type="mx-quant", bit="e3m2", granularity="per_block"),
                               compute_dtype=torch.float64)
    assert (type(mx), mx.elem.name, mx.fmt, mx.block_size, mx.scale_rule, mx.compute_dtype) == (
        MXQuantizer, "e3m2", "mxfp6", 32, "ceil", torch.float64)
    # an explicit block size is kept (QuantSpec validates which sizes lightx2v runs; the builder passes it on)
    assert build_block_quantizer(SimpleNamespace(quant_type="mx-quant", bit="e2m1", block_size=64)).block_size == 64
    nv32 = build_block_quantizer(SimpleNamespace(quant_type="nvfp4-quant", bit="e2m1", block_size=32), torch.float64)
    assert (nv32.block_size, nv32.compute_dtype) == (32, torch.float64)
    with pytest.raises(ValueError, match="nvfp4-quant needs bit 'e2m1'"):
        build_block_quantizer(SimpleNamespace(quant_type="nvfp4-quant", bit="e4m3"))
    with pytest.raises(ValueError, match="quant_type must be"):
        build_block_quantizer(SimpleNamespace(quant_type="int-quant", bit=8))


def test_nvfp4_block_absmax_is_taken_in_the_compute_dtype():
    # tensor absmax 1.5: g = 2688 / 1.5 = 1792. Block 2's absmax 0.2277786 gives g * a / 6 = 68.03, just above the
    # e4m3 midpoint 68 (-> 72); rounded to bf16 first (0.22753906) it gives 67.96 (-> 64).
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 16] = 1.5, 0.2277786
    for dtype, e4m3 in ((torch.float32, 72.0), (torch.bfloat16, 64.0)):
        s = NVFP4Quantizer(compute_dtype=dtype).qparams(x)[0]
        assert float(s[0, 1]) * 1792 == pytest.approx(e4m3, rel=1e-2), dtype


# ------------------------------------------------------------------------------------------- static activation scales
def test_static_input_scales_hand_cases():
    from vidquant.quant.blockfmt import static_input_scale

    assert static_input_scale("nvfp4", torch.tensor(4.0)).item() == 672.0  # input_global_scale = 2688 / absmax
    assert static_input_scale("fp8-pertensor", torch.tensor([896.0])).item() == 2.0  # input_scale = absmax / 448
    assert static_input_scale("fp8-pertensor", torch.tensor(896.0)).shape == ()
    assert torch.isfinite(static_input_scale("nvfp4", torch.tensor(0.0)))  # never-active input: finite scale
    with pytest.raises(ValueError, match="scheme must be one of"):
        static_input_scale("int8", torch.tensor(1.0))


def test_fp8_pertensor_static_fake_hand_case():
    from vidquant.quant.blockfmt import fake_static_input

    x = t(1.0, 10.0, -1000.0, 1000.0, 0.3)
    # x / 0.5 = 2, 20, -2000 -> -448, 2000 -> 448, 0.6 -> e4m3 0.625; times 0.5
    y = fake_static_input("fp8-pertensor", x, torch.tensor(0.5))
    assert y.dtype == torch.float32 and y.tolist() == [1.0, 10.0, -224.0, 224.0, 0.3125]
    with pytest.raises(ValueError, match="scheme must be one of"):
        fake_static_input("mxfp8", x, torch.tensor(0.5))


def test_static_input_quantizer_keeps_the_input_dtype():
    from vidquant.quant.blockfmt import StaticInputQuantizer, static_input_scheme

    aq = StaticInputQuantizer.from_absmax("fp8-pertensor", torch.tensor(896.0))
    assert aq.scale.item() == 2.0 and "input_scale=2" in repr(aq)
    x = torch.tensor([[3.0, -900.0]], dtype=torch.bfloat16)
    y = aq.fake(x)
    assert y.dtype == torch.bfloat16 and y.float().tolist() == [[3.0, -896.0]]
    assert static_input_scheme(NVFP4Quantizer()) == "nvfp4"
    assert static_input_scheme(FloatQuantizer("e4m3", granularity="per_tensor", static=True)) == "fp8-pertensor"
    assert static_input_scheme(FloatQuantizer("e4m3", granularity="per_token")) is None
    assert static_input_scheme(None) is None
    with pytest.raises(ValueError, match="scheme must be one of"):
        StaticInputQuantizer("int8", torch.tensor(1.0))
