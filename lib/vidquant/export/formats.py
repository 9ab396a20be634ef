"""lightx2v's checkpoint layouts for the formats beyond W8A8, one linear at a time (facts: docs/formats.md).

A *scheme* is lightx2v's ``dit_quant_scheme`` name. For a linear ``<key>`` (``<key>.weight`` in the checkpoint)
each scheme stores these tensors (``out`` x ``in`` weight):

==================  =========================================  ==========================================
scheme              tensors                                    activations at run time
==================  =========================================  ==========================================
mxfp8               weight uint8 (out, in) e4m3 bits;          MXFP8 e4m3, dynamic E8M0 scale per 32
                    weight_scale float8_e8m0fnu, swizzled
mxfp6-mxfp8         weight uint8 (out, 3·in/4) e3m2 packed;    MXFP8 e4m3, dynamic
                    weight_scale float8_e8m0fnu, swizzled
mxfp4               weight uint8 (out, in/2) e2m1 packed;      MXFP4 e2m1, dynamic
                    weight_scale float8_e8m0fnu, swizzled
nvfp4               weight uint8 (out, in/2); weight_scale     NVFP4 with the static input_global_scale,
                    float8_e4m3fn swizzled; weight_global_     dynamic e4m3 block scales; the GEMM output
                    scale fp32 (); input_global_scale fp32 (); is multiplied by alpha = 1 / (input_global
                    alpha fp32 (); input_absmax fp32 ()        _scale · weight_global_scale)
int4-g128-marlin    weight int32 (in/16, 2·out) Marlin tiles;  none (W4A16)
                    weight_scale float16 (in/128, out);
                    weight_workspace int32 (out/128·8,)
fp8-pertensor       weight float8_e4m3fn (out, in);            fp8 e4m3 with the static per-tensor
                    weight_scale fp32 (1,); input_scale (1,)   input_scale: clamp(x / s, ±448)
==================  =========================================  ==========================================

Swizzled block scales: the (out, in/block) scale matrix padded to (round_up(out, 128), round_up(in/block, 4)) and
stored as tiles of 128 rows x 4 columns, each tile 512 bytes laid out [32][4][4] (row % 32, row // 32 % 4,
col % 4); tiles in row-tile-major order. Two fp4 codes per byte: element 2j in the low nibble. Four fp6 codes
in three bytes, little-endian: element i occupies bits 6i..6i+5 of the 24-bit group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vidquant.quant.blockfmt import (
    e8m0_bits,
    e8m0_value,
    minifloat_bits,
    minifloat_from_bits,
    static_input_scale,
)
from vidquant.quant.quantizer import QTensor

__all__ = [
    "BLOCK_SCHEMES",
    "SchemeSpec",
    "scheme_of_config",
    "pack_linear",
    "unpack_linear",
    "expected_layout",
    "detect_linear_scheme",
    "swizzle_scales",
    "unswizzle_scales",
    "pack_fp4",
    "unpack_fp4",
    "pack_fp6",
    "unpack_fp6",
    "marlin_pack",
    "marlin_unpack",
    "companion_suffixes",
    "in_features_of",
    "out_features_of",
]


@dataclass(frozen=True)
class SchemeSpec:
    """What a scheme needs of the config: weight (quant_type, bit, granularity, group) and act spec, or None."""

    name: str
    weight: tuple
    act: tuple | None
    elem: str | None  # weight element format (block formats)
    block: int


# (quant_type, bit, granularity, group/block size); act None = weight-only.
BLOCK_SCHEMES: dict[str, SchemeSpec] = {
    "mxfp8": SchemeSpec("mxfp8", ("mx-quant", "e4m3", "per_block", 32), ("mx-quant", "e4m3", "per_block", 32),
                        "e4m3", 32),
    "mxfp6-mxfp8": SchemeSpec("mxfp6-mxfp8", ("mx-quant", "e3m2", "per_block", 32),
                              ("mx-quant", "e4m3", "per_block", 32), "e3m2", 32),
    "mxfp4": SchemeSpec("mxfp4", ("mx-quant", "e2m1", "per_block", 32), ("mx-quant", "e2m1", "per_block", 32),
                        "e2m1", 32),
    "nvfp4": SchemeSpec("nvfp4", ("nvfp4-quant", "e2m1", "per_block", 16), ("nvfp4-quant", "e2m1", "per_block", 16),
                        "e2m1", 16),
    "int4-g128-marlin": SchemeSpec("int4-g128-marlin", ("int-quant", 4, "per_group", 128), None, None, 128),
    "fp8-pertensor": SchemeSpec("fp8-pertensor", ("float-quant", "e4m3", "per_tensor", -1),
                                ("float-quant", "e4m3", "per_tensor", -1), None, 0),
}
_E8M0 = torch.float8_e8m0fnu
_MARLIN_MAX_PAR = 8  # Marlin's Layer allocates out/128 * max_par int32 workspace entries (max_par default 8)


def _spec_key(spec) -> tuple:
    size = spec.block_size if spec.granularity == "per_block" else spec.group_size
    if spec.granularity in ("per_tensor", "per_channel", "per_token"):
        size = -1
    return spec.quant_type, spec.bit, spec.granularity, size


def scheme_of_config(vg) -> str | None:
    """The block scheme a ``quant.video_gen`` section describes, None when it is none of them (W8A8 and
    fake-quant-only formats). Raises ValueError naming the field when it is close to one but not quite."""
    w = _spec_key(vg.weight)
    a = None if vg.act is None else _spec_key(vg.act)
    for name, s in BLOCK_SCHEMES.items():
        if w == s.weight and a == s.act:
            if not vg.weight.symmetric:
                raise ValueError(f"quant.video_gen.weight.symmetric: got False; {name} is symmetric")
            if name == "fp8-pertensor" and not vg.act.static:
                raise ValueError("quant.video_gen.act.static: got False; lightx2v's fp8-pertensor reads a static "
                                 "input_scale (set act.static: true)")
            return name
    return None


# ----------------------------------------------------------------------------------------------- bit packing
def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def swizzle_scales(s: Tensor) -> Tensor:
    """(rows, cols) one-byte scales -> lightx2v's padded, tiled layout (round_up(rows,128), round_up(cols,4))."""
    rows, cols = s.shape
    big_r, big_c = _round_up(rows, 128), _round_up(cols, 4)
    padded = torch.zeros(big_r, big_c, dtype=s.dtype)
    padded[:rows, :cols] = s
    tiles = padded.reshape(big_r // 128, 4, 32, big_c // 4, 4)  # (m_tile, row//32 % 4, row % 32, k_tile, col % 4)
    return tiles.permute(0, 3, 2, 1, 4).reshape(big_r, big_c).contiguous()


def unswizzle_scales(s: Tensor, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`swizzle_scales`, cropped to (rows, cols)."""
    big_r, big_c = s.shape
    tiles = s.reshape(big_r // 128, big_c // 4, 32, 4, 4)  # (m_tile, k_tile, row % 32, row//32 % 4, col % 4)
    return tiles.permute(0, 3, 2, 1, 4).reshape(big_r, big_c)[:rows, :cols].contiguous()


def pack_fp4(bits: Tensor) -> Tensor:
    """(…, n) 4-bit codes -> (…, n/2) bytes, element 2j in the low nibble (PTX cvt e2m1x2 order)."""
    b = bits.to(torch.uint8)
    return (b[..., 0::2] & 0xF) | ((b[..., 1::2] & 0xF) << 4)


def unpack_fp4(packed: Tensor) -> Tensor:
    lo, hi = packed & 0xF, packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def pack_fp6(bits: Tensor) -> Tensor:
    """(…, n) 6-bit codes -> (…, 3n/4) bytes: a | b<<6, b>>2 | c<<4, c>>4 | d<<2 for each 4 codes a, b, c, d."""
    b = bits.to(torch.int32).reshape(*bits.shape[:-1], -1, 4)
    a, bb, c, d = b.unbind(-1)
    out = torch.stack([(a | (bb << 6)) & 0xFF, ((bb >> 2) | (c << 4)) & 0xFF, ((c >> 4) | (d << 2)) & 0xFF], dim=-1)
    return out.reshape(*bits.shape[:-1], -1).to(torch.uint8)


def unpack_fp6(packed: Tensor) -> Tensor:
    p = packed.to(torch.int32).reshape(*packed.shape[:-1], -1, 3)
    b0, b1, b2 = p.unbind(-1)
    a = b0 & 0x3F
    b = (b0 >> 6) | ((b1 & 0xF) << 2)
    c = (b1 >> 4) | ((b2 & 0x3) << 4)
    d = b2 >> 2
    return torch.stack([a, b, c, d], dim=-1).reshape(*packed.shape[:-1], -1).to(torch.uint8)


# ----------------------------------------------------------------------------------------------- Marlin
def _marlin_perms() -> tuple[Tensor, Tensor]:
    """Marlin's weight permutation (1024 entries per 16-row tile strip) and its 64-entry group-scale permutation
    (IST-DASLab/marlin ``_get_perms``, reimplemented from its description)."""
    perm = []
    for i in range(32):
        col = i // 4
        rows = [2 * (i % 4), 2 * (i % 4) + 1, 2 * (i % 4 + 4), 2 * (i % 4 + 4) + 1]
        first = [16 * r + col + 8 * blk for blk in (0, 1) for r in rows]
        for j in range(4):
            perm.extend(p + 256 * j for p in first)
    interleave = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    perm_t = torch.tensor(perm).reshape(-1, 8)[:, interleave].reshape(-1)
    scale_perm = torch.tensor([i + 8 * j for i in range(8) for j in range(8)])
    return perm_t, scale_perm


def marlin_pack(codes: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """int4 codes (out, in) in [-8, 7] and group-128 scales (out, in/128) -> Marlin's (int32 (in/16, 2·out),
    float16 (in/128, out)). Codes are stored offset by 8 (0..15), eight per int32, low nibble first."""
    out_f, in_f = codes.shape
    if in_f % 128 or out_f % 256:
        raise ValueError(f"Marlin needs in_features % 128 == 0 and out_features % 256 == 0, got ({out_f}, {in_f})")
    perm, scale_perm = _marlin_perms()
    u = (codes.to(torch.int64) + 8).T.contiguous()  # (k, n)
    tiles = u.reshape(in_f // 16, 16, out_f // 16, 16).permute(0, 2, 1, 3).reshape(in_f // 16, out_f * 16)
    tiles = tiles.reshape(-1, perm.numel())[:, perm].reshape(tiles.shape)
    q = torch.zeros(tiles.shape[0], tiles.shape[1] // 8, dtype=torch.int64)
    for i in range(8):
        q |= tiles[:, i::8] << (4 * i)
    q = torch.where(q >= 2**31, q - 2**32, q).to(torch.int32)  # the uint32 bit pattern as int32
    s = scale.T.contiguous().reshape(-1, scale_perm.numel())[:, scale_perm].reshape(-1, out_f)
    return q, s.to(torch.float16).contiguous()


def marlin_unpack(q: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`marlin_pack`: (codes int8 (out, in), scales fp32 (out, in/128))."""
    perm, scale_perm = _marlin_perms()
    k16, n8 = q.shape
    in_f, out_f = k16 * 16, n8 // 2
    q64 = q.to(torch.int64) & 0xFFFFFFFF
    tiles = torch.empty(k16, n8 * 8, dtype=torch.int64)
    for i in range(8):
        tiles[:, i::8] = (q64 >> (4 * i)) & 0xF
    tiles = tiles.reshape(-1, perm.numel())[:, torch.argsort(perm)].reshape(tiles.shape)
    u = tiles.reshape(in_f // 16, out_f // 16, 16, 16).permute(0, 2, 1, 3).reshape(in_f, out_f)
    scale = s.float().reshape(-1, scale_perm.numel())[:, torch.argsort(scale_perm)].reshape(-1, out_f)
    return (u - 8).T.to(torch.int8).contiguous(), scale.T.contiguous()


# ----------------------------------------------------------------------------------------------- per linear
def _weight_bits(codes: Tensor, elem: str) -> Tensor:
    bits = minifloat_bits(codes.float(), elem)
    if elem == "e2m1":
        return pack_fp4(bits)
    if elem in ("e2m3", "e3m2"):
        return pack_fp6(bits)
    return bits  # fp8 elements: one byte each


def _weight_codes(packed: Tensor, elem: str) -> Tensor:
    if elem == "e2m1":
        bits = unpack_fp4(packed)
    elif elem in ("e2m3", "e3m2"):
        bits = unpack_fp6(packed)
    else:
        bits = packed
    return minifloat_from_bits(bits, elem)


def pack_linear(scheme: str, q: QTensor, input_absmax: Tensor | None = None) -> dict[str, Tensor]:
    """lightx2v's tensors (suffixes after ``<linear>.``) for one quantized weight. ``input_absmax``: the calibrated
    max |x| of the linear's input (nvfp4's input_global_scale, fp8-pertensor's input_scale)."""
    spec = BLOCK_SCHEMES[scheme]
    out_f, in_f = q.codes.shape
    if scheme == "int4-g128-marlin":
        weight, scale = marlin_pack(q.codes, q.scale.reshape(out_f, -1))
        return {"weight": weight, "weight_scale": scale,
                "weight_workspace": torch.zeros(out_f // 128 * _MARLIN_MAX_PAR, dtype=torch.int32)}
    if scheme == "fp8-pertensor":
        amax = _need_absmax(scheme, input_absmax)
        return {"weight": q.codes.to(torch.float8_e4m3fn), "weight_scale": q.scale.reshape(1).float(),
                "input_scale": static_input_scale(scheme, amax).reshape(1)}
    cols = in_f // spec.block
    tensors = {"weight": _weight_bits(q.codes, spec.elem)}
    scale = q.scale.reshape(out_f, cols).float()
    if scheme == "nvfp4":
        g = q.global_scale.float().reshape(())
        block = (scale * g).clamp(0, 448.0).to(torch.float8_e4m3fn).view(torch.uint8)  # exact e4m3 values
        amax = _need_absmax(scheme, input_absmax).float().clamp_min(1e-12).reshape(())
        ig = static_input_scale(scheme, amax)  # lightx2v derives the same two numbers from input_absmax if present
        tensors.update(weight_scale=swizzle_scales(block).view(torch.float8_e4m3fn), weight_global_scale=g,
                       input_global_scale=ig, alpha=(1.0 / (ig * g)).reshape(()), input_absmax=amax)
    else:
        tensors["weight_scale"] = swizzle_scales(e8m0_bits(scale)).view(_E8M0)
    return tensors


def _need_absmax(scheme: str, input_absmax: Tensor | None) -> Tensor:
    if input_absmax is None:
        raise ValueError(f"{scheme} stores a static activation scale: calibration data is needed (calib section)")
    return input_absmax


def unpack_linear(scheme: str, tensors: dict[str, Tensor], out_f: int, in_f: int) -> Tensor:
    """The dequantized fp32 weight (out, in) that lightx2v's kernel multiplies by (``alpha`` aside for nvfp4: the
    weight part is ``codes · e4m3_scale / weight_global_scale``)."""
    spec = BLOCK_SCHEMES[scheme]
    if scheme == "int4-g128-marlin":
        codes, scale = marlin_unpack(tensors["weight"], tensors["weight_scale"])
        return codes.float() * scale.repeat_interleave(128, dim=1)
    if scheme == "fp8-pertensor":
        return tensors["weight"].float() * tensors["weight_scale"].float().reshape(())
    cols = in_f // spec.block
    codes = _weight_codes(tensors["weight"], spec.elem)
    raw = unswizzle_scales(tensors["weight_scale"].view(torch.uint8), out_f, cols)
    if scheme == "nvfp4":
        scale = raw.view(torch.float8_e4m3fn).float() / tensors["weight_global_scale"].float()
    else:
        scale = e8m0_value(raw)
    return codes * scale.repeat_interleave(spec.block, dim=1)


def expected_layout(scheme: str, out_f: int, in_f: int) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """suffix -> (dtype, shape) of every tensor of one linear (bias excluded)."""
    spec = BLOCK_SCHEMES[scheme]
    if scheme == "int4-g128-marlin":
        return {"weight": (torch.int32, (in_f // 16, out_f * 2)), "weight_scale": (torch.float16, (in_f // 128, out_f)),
                "weight_workspace": (torch.int32, (out_f // 128 * _MARLIN_MAX_PAR,))}
    if scheme == "fp8-pertensor":
        return {"weight": (torch.float8_e4m3fn, (out_f, in_f)), "weight_scale": (torch.float32, (1,)),
                "input_scale": (torch.float32, (1,))}
    width = {"e2m1": in_f // 2, "e2m3": in_f * 3 // 4, "e3m2": in_f * 3 // 4}.get(spec.elem, in_f)
    scales = (_round_up(out_f, 128), _round_up(in_f // spec.block, 4))
    layout = {"weight": (torch.uint8, (out_f, width))}
    if scheme == "nvfp4":
        layout.update(weight_scale=(torch.float8_e4m3fn, scales), weight_global_scale=(torch.float32, ()),
                      input_global_scale=(torch.float32, ()), alpha=(torch.float32, ()),
                      input_absmax=(torch.float32, ()))
    else:
        layout["weight_scale"] = (_E8M0, scales)
    return layout


def companion_suffixes() -> set[str]:
    """Every non-weight tensor suffix any block scheme stores next to a linear's weight."""
    return {s for name in BLOCK_SCHEMES for s in expected_layout(name, 256, 256) if s != "weight"}


def detect_linear_scheme(tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> str | None:
    """The block scheme of one linear from its tensors' (dtype, shape) by suffix; None for int8/fp8 per-channel
    (W8A8) or anything unrecognised. mxfp8 / mxfp6 / mxfp4 differ in the packed weight width, resolved against
    the scale's column count."""
    w, s = tensors.get("weight"), tensors.get("weight_scale")
    if w is None or s is None:
        return None
    if w[0] == torch.int32 and "weight_workspace" in tensors:
        return "int4-g128-marlin"
    if w[0] == torch.float8_e4m3fn and "input_scale" in tensors:
        return "fp8-pertensor"
    if w[0] != torch.uint8 or len(w[1]) != 2:
        return None
    if s[0] == torch.float8_e4m3fn and "weight_global_scale" in tensors:
        return "nvfp4"
    if s[0] != _E8M0:
        return None
    width, cols = w[1][1], s[1][1]  # cols = round_up(in/32, 4)
    candidates = (("mxfp8", width), ("mxfp6-mxfp8", width * 4 // 3), ("mxfp4", width * 2))
    # The padding makes widths ambiguous (mxfp6 (out, 192) and mxfp8 (out, 192) both have 8 scale columns):
    # first the element width whose in_features fills the scale columns exactly (every Wan dim is a multiple of 128).
    for exact in (True, False):
        for name, in_f in candidates:
            fits = in_f == 32 * cols if exact else _round_up(in_f // 32, 4) == cols
            if fits and expected_layout(name, w[1][0], in_f)["weight"][1] == w[1]:
                return name
    return None


def in_features_of(scheme: str, weight_shape: tuple[int, ...]) -> int:
    """in_features of a linear from its stored weight's shape."""
    if scheme == "int4-g128-marlin":
        return weight_shape[0] * 16
    width = weight_shape[1]
    return {"mxfp4": width * 2, "nvfp4": width * 2, "mxfp6-mxfp8": width * 4 // 3}.get(scheme, width)


def out_features_of(scheme: str, weight_shape: tuple[int, ...]) -> int:
    return weight_shape[1] // 2 if scheme == "int4-g128-marlin" else weight_shape[0]

