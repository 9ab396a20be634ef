"""lightx2v layouts of the formats beyond W8A8 (vidquant.export.formats): packing, pinned tensor names / dtypes /
shapes, the converter's --linear_type, verify, and the emulated runtime linear."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_keymap import same_bytes, wan_state_dict

from vidquant.export.converter import convert, quantize_block_weight
from vidquant.export.formats import (
    BLOCK_SCHEMES,
    detect_linear_scheme,
    expected_layout,
    marlin_pack,
    marlin_unpack,
    pack_fp4,
    pack_fp6,
    pack_linear,
    swizzle_scales,
    unpack_fp6,
    unpack_linear,
    unswizzle_scales,
)
from vidquant.export.verify import verify
from vidquant.quant import FloatQuantizer, IntQuantizer
from vidquant.quant.blockfmt import MXQuantizer, NVFP4Quantizer, nvfp4_fake_static
from vidquant.runtime.emulated import EmulatedLinear

E8M0, E4M3, U8, I32, F32, F16 = (torch.float8_e8m0fnu, torch.float8_e4m3fn, torch.uint8, torch.int32, torch.float32,
                                 torch.float16)

# lightx2v's layouts for a (1536, 5120) linear, written out from its sources (docs/formats.md): the kernels'
# output buffers in lightx2v_kernel/python/lightx2v_kernel/gemm.py, the loaders in
# lightx2v/common/ops/mm/mm_weight.py, IST-DASLab/marlin's Layer buffers.
PINNED = {
    "mxfp8": {"weight": (U8, (1536, 5120)), "weight_scale": (E8M0, (1536, 160))},
    "mxfp6-mxfp8": {"weight": (U8, (1536, 3840)), "weight_scale": (E8M0, (1536, 160))},
    "mxfp4": {"weight": (U8, (1536, 2560)), "weight_scale": (E8M0, (1536, 160))},
    "nvfp4": {"weight": (U8, (1536, 2560)), "weight_scale": (E4M3, (1536, 320)), "weight_global_scale": (F32, ()),
              "input_global_scale": (F32, ()), "alpha": (F32, ()), "input_absmax": (F32, ())},
    "int4-g128-marlin": {"weight": (I32, (320, 3072)), "weight_scale": (F16, (40, 1536)),
                         "weight_workspace": (I32, (96,))},
    "fp8-pertensor": {"weight": (E4M3, (1536, 5120)), "weight_scale": (F32, (1,)), "input_scale": (F32, (1,))},
}
QUANTIZERS = {
    "mxfp8": lambda: MXQuantizer("e4m3"), "mxfp6-mxfp8": lambda: MXQuantizer("e3m2"),
    "mxfp4": lambda: MXQuantizer("e2m1"), "nvfp4": NVFP4Quantizer,
    "int4-g128-marlin": lambda: IntQuantizer(4, True, "per_group", 128),
    "fp8-pertensor": lambda: FloatQuantizer("e4m3", "per_tensor"),
}


@pytest.mark.parametrize("scheme", sorted(PINNED))
def test_layout_pinned_to_lightx2v(scheme):
    assert expected_layout(scheme, 1536, 5120) == PINNED[scheme]
    assert detect_linear_scheme(PINNED[scheme]) == scheme


@pytest.mark.parametrize("scheme", sorted(PINNED))
def test_rtn_export_has_the_layout_and_decodes_to_the_quantizer(scheme):
    w = torch.randn(256, 512) * 0.05
    q = QUANTIZERS[scheme]().quantize(w)
    t = pack_linear(scheme, q, torch.tensor(4.0))
    assert {k: (v.dtype, tuple(v.shape)) for k, v in t.items()} == expected_layout(scheme, 256, 512)
    dq = unpack_linear(scheme, t, 256, 512)
    if scheme == "int4-g128-marlin":  # Marlin stores fp16 scales
        ref = q.codes.float() * q.scale.half().float().repeat_interleave(128, dim=1)
    else:
        ref = q.dequantize()
    torch.testing.assert_close(dq, ref, rtol=1e-6, atol=0)


def test_nvfp4_input_absmax_gives_lightx2v_the_stored_scales():
    """lightx2v reads <P>.input_absmax when present (older versions and its lazy_load path always do) and derives
    input_global_scale = 2688 / input_absmax and alpha = 1 / (input_global_scale · weight_global_scale) from it; the
    stored input_global_scale / alpha (its non-lazy path without input_absmax) must be the same numbers."""
    t = pack_linear("nvfp4", NVFP4Quantizer().quantize(torch.randn(256, 512) * 0.05), torch.tensor(3.7))
    derived = (2688.0 / t["input_absmax"]).to(torch.float32)
    assert t["input_absmax"].item() == pytest.approx(3.7) and torch.equal(derived, t["input_global_scale"])
    assert torch.equal(1.0 / (derived * t["weight_global_scale"]), t["alpha"])


# ------------------------------------------------------------------------------------------- packing by hand
def test_fp4_packing_low_nibble_first():
    assert pack_fp4(torch.tensor([[0x1, 0x2, 0xF, 0x0]])).tolist() == [[0x21, 0x0F]]


def test_fp6_packing_bit_order():
    # a=0b000001, b=0b000011, c=0b000111, d=0b001111 -> a|b<<6, b>>2|c<<4, c>>4|d<<2
    packed = pack_fp6(torch.tensor([[1, 3, 7, 15]]))
    assert packed.tolist() == [[1 | (3 << 6) & 0xFF, (3 >> 2) | (7 << 4) & 0xFF, (7 >> 4) | (15 << 2)]]
    b = torch.randint(0, 64, (5, 32), dtype=torch.uint8)
    assert torch.equal(unpack_fp6(pack_fp6(b)), b)


def test_scale_swizzle_offsets():
    s = torch.zeros(130, 5, dtype=torch.uint8)
    s[33, 5 - 1] = 7  # row 33: tile 0, row%32 = 1, row//32 = 1; col 4: k-tile 1, col%4 = 0
    s[129, 0] = 9  # row-tile 1
    sw = swizzle_scales(s)
    assert sw.shape == (256, 8)
    flat = sw.reshape(-1)
    k_tiles = 2
    assert flat[0 * k_tiles * 512 + 1 * 512 + 1 * 16 + 1 * 4 + 0].item() == 7
    assert flat[1 * k_tiles * 512 + 0 * 512 + 1 * 16 + 0 * 4 + 0].item() == 9
    assert int((flat != 0).sum()) == 2
    assert torch.equal(unswizzle_scales(sw, 130, 5), s)


def test_marlin_first_word_from_its_permutation():
    # Marlin's first int32 holds, low nibble first, (codes + 8) at (k, n) = (0,0) (8,0) (0,8) (8,8) (1,0) (9,0)
    # (1,8) (9,8) of the (in, out)-transposed weight.
    codes = torch.randint(-8, 8, (256, 128), dtype=torch.int8)
    q, s = marlin_pack(codes, torch.ones(256, 1))
    u = codes.T.to(torch.int64) + 8
    nibbles = [u[0, 0], u[8, 0], u[0, 8], u[8, 8], u[1, 0], u[9, 0], u[1, 8], u[9, 8]]
    word = sum(int(v) << (4 * i) for i, v in enumerate(nibbles))
    assert int(q[0, 0]) & 0xFFFFFFFF == word
    back, scale = marlin_unpack(q, s)
    assert torch.equal(back, codes) and torch.equal(scale, torch.ones(256, 1))


# ------------------------------------------------------------------------------------------- converter
@pytest.mark.parametrize("linear_type,scheme", [("mxfp8", "mxfp8"), ("mxfp6", "mxfp6-mxfp8"), ("mxfp4", "mxfp4"),
                                                ("nvfp4", "nvfp4")])
def test_converter_linear_type_names_and_codes_match_our_export(tmp_path, linear_type, scheme):
    sd = wan_state_dict()
    save_file(sd, tmp_path / "in.safetensors")
    out = convert(tmp_path / "in.safetensors", tmp_path / "out", quantized=True, linear_type=linear_type,
                  progress=False)
    conv = {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}
    key = "blocks.1.ffn.0.weight"
    w = sd[key]
    layout = expected_layout(scheme, *w.shape)
    # lightx2v's converter names: <key>, <key>_scale, <key>_global_scale (nvfp4); no activation tensors
    names = {key: "weight", key + "_scale": "weight_scale"}
    if scheme == "nvfp4":
        names[key + "_global_scale"] = "weight_global_scale"
    assert {k for k in conv if k.startswith("blocks.1.ffn.0.")} == set(names) | {"blocks.1.ffn.0.bias"}
    for k, suffix in names.items():
        assert (conv[k].dtype, tuple(conv[k].shape)) == layout[suffix]
    # our export of the same (bf16) weight: the same codes and scales
    q = (NVFP4Quantizer() if scheme == "nvfp4" else MXQuantizer(BLOCK_SCHEMES[scheme].elem)).quantize(
        w.to(torch.bfloat16))
    ours = pack_linear(scheme, q, torch.tensor(1.0))
    for k, suffix in names.items():
        assert same_bytes(conv[k], ours[suffix]), k
    if scheme == "nvfp4":  # not runnable by lightx2v without the calibrated activation scale: verify says so
        assert any("input_global_scale" in str(p) for p in verify(out))
    else:
        assert verify(out, advanced_ptq=False) == []


def test_converter_passes_calibrated_block_tensors_through(tmp_path):
    sd = wan_state_dict()
    key = "blocks.0.self_attn.q"
    packed = pack_linear("nvfp4", NVFP4Quantizer().quantize(sd[key + ".weight"]), torch.tensor(3.0))
    del sd[key + ".weight"]
    sd |= {f"{key}.{s}": t for s, t in packed.items()}
    save_file(sd, tmp_path / "in.safetensors")
    out = convert(tmp_path / "in.safetensors", tmp_path / "out", quantized=True, linear_type="mxfp4",
                  non_linear_dtype="torch.bfloat16", progress=False)
    conv = {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}
    for s, t in packed.items():
        assert same_bytes(conv[f"{key}.{s}"], t), s  # untouched: not re-quantized, not cast to bf16
    assert conv["blocks.0.self_attn.k.weight"].dtype == torch.uint8  # the float ones were quantized


def test_quantize_block_weight_refuses_bad_shapes():
    from vidquant.export.converter import ConverterError

    with pytest.raises(ConverterError, match="multiple of"):
        quantize_block_weight("x.weight", torch.randn(4, 40), "mxfp4")
    with pytest.raises(ConverterError, match="NaN"):
        quantize_block_weight("x.weight", torch.full((4, 32), float("nan")), "nvfp4")


# ------------------------------------------------------------------------------------------- verify
def test_verify_names_wrong_block_tensors(tmp_path):
    sd = wan_state_dict(dim=128, ffn=256)
    for k in [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].ndim == 2]:
        base = k.removesuffix(".weight")
        packed = pack_linear("mxfp4", MXQuantizer("e2m1").quantize(sd.pop(k)))
        sd |= {f"{base}.{s}": t for s, t in packed.items()}
    save_file(sd, tmp_path / "ok.safetensors")
    assert verify(tmp_path / "ok.safetensors", advanced_ptq=False) == []
    sd["blocks.1.ffn.2.weight_scale"] = sd["blocks.1.ffn.2.weight_scale"][:, :4].contiguous()
    sd.pop("blocks.0.cross_attn.o.weight_scale")
    save_file(sd, tmp_path / "bad.safetensors")
    text = "\n".join(map(str, verify(tmp_path / "bad.safetensors", advanced_ptq=False)))
    assert "blocks.1.ffn.2.weight_scale" in text and "blocks.0.cross_attn.o.weight" in text


# ------------------------------------------------------------------------------------------- emulated runtime
@pytest.mark.parametrize("scheme", sorted(PINNED))
def test_emulated_linear_is_dequantize_then_gemm(scheme):
    torch.manual_seed(0)
    w, b, x = torch.randn(256, 256) * 0.05, torch.randn(256), torch.randn(3, 7, 256)
    q = QUANTIZERS[scheme]().quantize(w)
    amax = x.abs().amax()
    lin = EmulatedLinear(scheme, pack_linear(scheme, q, amax), b, 256, 256)
    wdq = unpack_linear(scheme, pack_linear(scheme, q, amax), 256, 256)
    xq = {"mxfp8": lambda: MXQuantizer("e4m3").fake(x), "mxfp6-mxfp8": lambda: MXQuantizer("e4m3").fake(x),
          "mxfp4": lambda: MXQuantizer("e2m1").fake(x),
          "nvfp4": lambda: nvfp4_fake_static(x, 2688.0 / amax),
          "int4-g128-marlin": lambda: x,
          "fp8-pertensor": lambda: FloatQuantizer("e4m3", "per_tensor").fake_with(x, amax / 448.0)}[scheme]()
    torch.testing.assert_close(lin(x), xq @ wdq.T + b, rtol=1e-5, atol=1e-5)
    assert (lin(x) - x @ w.T - b).abs().mean() < 0.2 * (x @ w.T).abs().mean()  # and it is still the layer


@pytest.mark.cuda
@pytest.mark.parametrize("scheme", sorted(PINNED))
def test_emulated_linear_runs_the_same_on_cuda(scheme):
    torch.manual_seed(1)
    w, b, x = torch.randn(256, 256) * 0.05, torch.randn(256), torch.randn(4, 256)
    lin = EmulatedLinear(scheme, pack_linear(scheme, QUANTIZERS[scheme]().quantize(w), x.abs().amax()), b, 256, 256)
    y_cpu = lin(x)
    y_cuda = lin.to("cuda")(x.cuda()).cpu()
    torch.testing.assert_close(y_cuda, y_cpu, rtol=1e-4, atol=1e-4)
