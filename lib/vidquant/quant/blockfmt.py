"""Block-scaled floating-point formats: MXFP8 / MXFP6 / MXFP4 (OCP MX) and NVFP4.

Both kinds quantize the last dim in blocks of consecutive elements that share one scale. They plug into the
rest of vidquant as ``per_group`` quantizers (``group_size`` = the block size), so SmoothQuant, AWQ and GPTQ
(which already know per-group grids) work with them unchanged: ``qparams`` gives one fp32 dequantization scale
per block, ``fake_with`` rounds a column on a given block scale.

The maths, in one place:

* :func:`round_to_minifloat` -- ``y`` rounded to nearest (ties to even mantissa) onto the grid of a small float
  format (e2m1, e2m3, e3m2, e4m3, e5m2), saturating at ±max (PTX ``cvt.rn.satfinite``; no inf/NaN codes);
* :func:`mx_block_scale` -- the E8M0 (power-of-two) shared scale of a block from its absmax ``a``:
  ``"ceil"`` (lightx2v's kernels: ``2^ceil(log2(a / max_elem))``, nothing saturates) or ``"floor"`` (the OCP MX
  spec: ``2^(floor(log2 a) - emax_elem)``; elements above max_elem saturate);
* :func:`nvfp4_block_scale` -- NVFP4: ``s = e4m3(g · a / 6)`` per 16 elements with a per-tensor fp32 global
  scale ``g = 6 · 448 / absmax`` (2688 / absmax); elements are ``e2m1(x · g / s)``, so ``x ≈ q · s / g``.

Codes: element *values* on the grid, stored losslessly in a float8 container (``float8_e4m3fn`` holds every
e2m1, e2m3, e3m2 and e4m3 value; e5m2 elements use ``float8_e5m2``), so ``QTensor.dequantize`` is the shared
``codes · scale``. The packed bit layouts lightx2v stores (two fp4 codes per byte, four fp6 codes per three
bytes, swizzled scale tiles) are built at export (``vidquant.export.formats``).

Sources of these facts: ``docs/formats.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .quantizer import QTensor, _BaseQuantizer

__all__ = [
    "MINIFLOATS",
    "Minifloat",
    "MX_ELEMENTS",
    "MXQuantizer",
    "NVFP4Quantizer",
    "BlockQTensor",
    "round_to_minifloat",
    "minifloat_bits",
    "minifloat_from_bits",
    "mx_block_scale",
    "e8m0_bits",
    "e8m0_value",
    "nvfp4_global_scale",
    "nvfp4_block_scale",
    "nvfp4_fake_static",
    "STATIC_INPUT_SCHEMES",
    "StaticInputQuantizer",
    "static_input_scheme",
    "static_input_scale",
    "fake_static_input",
    "build_block_quantizer",
]


@dataclass(frozen=True)
class Minifloat:
    """A small float format: sign, ``exp_bits`` exponent bits (bias ``2^(e-1) - 1``), ``man_bits`` mantissa bits,
    largest finite value ``max``. Values ``(-1)^s 2^(E-bias) (1 + M/2^m)``; ``E = 0`` is subnormal."""

    name: str
    exp_bits: int
    man_bits: int
    max: float

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emax(self) -> int:
        """Exponent of the largest binade (OCP MX's ``emax_elem``)."""
        return int(torch.tensor(self.max).log2().floor())

    @property
    def min_normal_exp(self) -> int:
        return 1 - self.bias

    @property
    def container(self) -> torch.dtype:
        """The float8 dtype that holds every value of this format exactly."""
        return torch.float8_e5m2 if self.name == "e5m2" else torch.float8_e4m3fn


#: OCP MX element formats (e2m1 = FP4, e2m3 / e3m2 = FP6, e4m3 / e5m2 = FP8); max from the OCP MX v1.0 spec.
MINIFLOATS: dict[str, Minifloat] = {
    "e2m1": Minifloat("e2m1", 2, 1, 6.0),
    "e2m3": Minifloat("e2m3", 2, 3, 7.5),
    "e3m2": Minifloat("e3m2", 3, 2, 28.0),
    "e4m3": Minifloat("e4m3", 4, 3, 448.0),
    "e5m2": Minifloat("e5m2", 5, 2, 57344.0),
}
#: MX format name -> element format.
MX_ELEMENTS = {"mxfp8": ("e4m3", "e5m2"), "mxfp6": ("e2m3", "e3m2"), "mxfp4": ("e2m1",)}

E8M0_BIAS = 127
NVFP4_BLOCK = 16
MX_BLOCK = 32
_E2M1_MAX = 6.0
_E4M3_MAX = 448.0
NVFP4_GLOBAL_NUMERATOR = _E2M1_MAX * _E4M3_MAX  # 2688


# ----------------------------------------------------------------------------------------------------------
# The maths
# ----------------------------------------------------------------------------------------------------------


def _binade(a: Tensor, fmt: Minifloat) -> Tensor:
    """floor(log2 a) for a > 0, floored at the smallest normal exponent (subnormals share its spacing)."""
    _, e = torch.frexp(a)  # a = m · 2^e, m in [0.5, 1)
    return (e - 1).clamp_min(fmt.min_normal_exp)


def round_to_minifloat(y: Tensor, fmt: str | Minifloat) -> Tensor:
    """Round ``y`` (fp32) to the nearest value of ``fmt``, ties to the even mantissa, saturating at ±max.

    The spacing in the binade of ``|y|`` is ``2^(floor(log2|y|) - m)``; ``torch.round`` of ``|y| / spacing`` rounds
    half to even, and the parity of that integer is the parity of the mantissa's last bit.
    """
    fmt = MINIFLOATS[fmt] if isinstance(fmt, str) else fmt
    y = y.float()
    a = y.abs().clamp_max(fmt.max)  # satfinite: out-of-range values saturate, never inf
    spacing = torch.ldexp(torch.ones_like(a), _binade(a, fmt) - fmt.man_bits)
    q = torch.round(a / spacing) * spacing  # cannot exceed max: max is on the grid and a <= max
    return torch.copysign(q, y)


def minifloat_bits(v: Tensor, fmt: str | Minifloat) -> Tensor:
    """Bit codes (uint8, low ``1 + e + m`` bits: sign | exponent | mantissa) of values already on ``fmt``'s grid."""
    fmt = MINIFLOATS[fmt] if isinstance(fmt, str) else fmt
    v = v.float()
    a = v.abs()
    normal = a >= 2.0**fmt.min_normal_exp
    e = _binade(torch.where(a > 0, a, torch.ones_like(a)), fmt)
    exp_field = torch.where(normal, e + fmt.bias, torch.zeros_like(e))
    unit = torch.ldexp(torch.ones_like(a), torch.where(normal, e, torch.full_like(e, fmt.min_normal_exp)))
    frac = torch.where(normal, a / unit - 1.0, a / unit)
    man_field = torch.round(frac * 2**fmt.man_bits).to(torch.int32)
    sign = torch.signbit(v).to(torch.int32)
    bits = (sign << (fmt.exp_bits + fmt.man_bits)) | (exp_field.to(torch.int32) << fmt.man_bits) | man_field
    return bits.to(torch.uint8)


def minifloat_from_bits(bits: Tensor, fmt: str | Minifloat) -> Tensor:
    """Inverse of :func:`minifloat_bits` (fp32 values), through a table of all ``2^(1+e+m)`` codes."""
    fmt = MINIFLOATS[fmt] if isinstance(fmt, str) else fmt
    return _decode_table(fmt)[bits.long()]


def _decode_table(fmt: Minifloat) -> Tensor:
    n = fmt.exp_bits + fmt.man_bits
    codes = torch.arange(2 ** (n + 1))
    sign = torch.where((codes >> n) & 1 == 1, -1.0, 1.0)
    exp_field = (codes >> fmt.man_bits) & (2**fmt.exp_bits - 1)
    man = (codes & (2**fmt.man_bits - 1)).float() / 2**fmt.man_bits
    normal = exp_field > 0
    mag = torch.where(normal, 1.0 + man, man) * torch.pow(2.0, torch.where(normal, exp_field - fmt.bias,
                                                                           torch.tensor(fmt.min_normal_exp)))
    return sign * mag


def mx_block_scale(absmax: Tensor, elem: str | Minifloat, rule: str = "ceil") -> Tensor:
    """The E8M0 shared scale ``2^k`` (fp32) of blocks with the given absmax; ``k`` clamped to [-127, 127].

    ``"ceil"``: ``k = ceil(log2(absmax / max_elem))`` (lightx2v's quant kernels: the fp32 quotient converted to
    E8M0 rounding toward +inf), so ``absmax / 2^k <= max_elem``. ``"floor"``: the OCP MX spec,
    ``k = floor(log2 absmax) - emax_elem``. An all-zero block gets ``2^-127`` (E8M0 code 0).
    """
    fmt = MINIFLOATS[elem] if isinstance(elem, str) else elem
    if rule not in ("ceil", "floor"):
        raise ValueError(f"MX scale rule must be 'ceil' (lightx2v) or 'floor' (OCP MX spec), got {rule!r}")
    a = absmax.float()
    if rule == "ceil":
        # as the kernels compute it in fp32: mxfp4 multiplies by fp32(1/6), mxfp6 / mxfp8 divide by 28 / 448
        r = a * torch.tensor(1.0 / 6.0, dtype=torch.float32) if fmt.name == "e2m1" else a / fmt.max
        m, e = torch.frexp(r)  # r = m · 2^e; ceil(log2 r) = e - 1 exactly when m == 0.5
        # a quotient that underflows to 0 (absmax a few subnormal ulps) converts to the smallest E8M0, as 0 does
        k = torch.where(r > 0, torch.where(m == 0.5, e - 1, e), torch.full_like(e, -E8M0_BIAS))
    else:
        _, e = torch.frexp(a)
        k = (e - 1) - fmt.emax
    k = torch.where(a > 0, k, torch.full_like(k, -E8M0_BIAS)).clamp(-E8M0_BIAS, E8M0_BIAS)
    return torch.ldexp(torch.ones_like(a), k)


def e8m0_bits(scale: Tensor) -> Tensor:
    """E8M0 codes (uint8, ``k + 127``) of power-of-two scales ``2^k``."""
    _, e = torch.frexp(scale.float())
    return (e - 1 + E8M0_BIAS).clamp(0, 254).to(torch.uint8)


def e8m0_value(bits: Tensor) -> Tensor:
    """``2^(code - 127)`` in fp32 (code 255, NaN in E8M0, is not produced here)."""
    return torch.ldexp(torch.ones(bits.shape), bits.long() - E8M0_BIAS)


def nvfp4_global_scale(x: Tensor) -> Tensor:
    """``2688 / absmax(x)`` as a 0-dim fp32 tensor, computed in ``x``'s dtype as lightx2v's converter does
    (bf16 weights give a bf16-rounded global scale); an all-zero tensor counts as absmax 1 (g = 2688)."""
    amax = x.detach().abs().amax()
    g = NVFP4_GLOBAL_NUMERATOR / torch.where(amax > 0, amax, torch.ones_like(amax))
    return g.to(torch.float32)


def nvfp4_block_scale(absmax: Tensor, global_scale: Tensor) -> Tensor:
    """The e4m3 block scales ``e4m3(g · absmax · (1/6))`` (as float8_e4m3fn), saturating at 448."""
    s = global_scale.float() * (absmax.float() * (1.0 / _E2M1_MAX))
    return s.clamp(0, _E4M3_MAX).to(torch.float8_e4m3fn)


# ----------------------------------------------------------------------------------------------------------
# Quantizers
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockQTensor(QTensor):
    """A :class:`QTensor` of a block format: codes are element values (float8 container), ``scale`` the fp32
    dequantization scale per block, public shape ``(*lead, last // block)``. NVFP4 adds the fp32 global scale
    (``scale = e4m3_block_scale / global_scale``)."""

    fmt: str = ""
    global_scale: Tensor | None = None


class _BlockQuantizer(_BaseQuantizer):
    """Symmetric, per-block (``per_group``) quantizer onto a small float grid; subclasses give the block scale."""

    elem: Minifloat
    fmt: str

    def __init__(self, elem: str, block_size: int, compute_dtype: torch.dtype | None) -> None:
        if elem not in MINIFLOATS:
            raise ValueError(f"element format must be one of {sorted(MINIFLOATS)}, got {elem!r}")
        super().__init__("per_group", block_size, compute_dtype)
        self.elem = MINIFLOATS[elem]
        self.code_dtype = self.elem.container
        self.symmetric = True

    @property
    def block_size(self) -> int:
        return self.group_size

    def _encode(self, x: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
        if zero is not None:
            raise ValueError(f"{type(self).__name__} is symmetric: zero must be None")
        y = torch.where(scale > 0, x / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(x))
        return round_to_minifloat(y, self.elem)

    def quantize(self, x: Tensor) -> BlockQTensor:
        q = super().quantize(x)
        return BlockQTensor(q.codes, q.scale, None, q.granularity, q.group_size, q.dtype, self.fmt)

    def quantize_with(self, x: Tensor, scale: Tensor, zero: Tensor | None = None) -> BlockQTensor:
        q = super().quantize_with(x, scale, zero)
        return BlockQTensor(q.codes, q.scale, None, q.granularity, q.group_size, q.dtype, self.fmt)


class MXQuantizer(_BlockQuantizer):
    """OCP MX: blocks of 32 elements of ``elem`` (e4m3 / e5m2 = MXFP8, e2m3 / e3m2 = MXFP6, e2m1 = MXFP4) sharing
    one E8M0 scale. ``scale_rule``: ``"ceil"`` = lightx2v's kernels (default), ``"floor"`` = the OCP spec."""

    def __init__(self, elem: str = "e4m3", block_size: int = MX_BLOCK, scale_rule: str = "ceil",
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(elem, block_size, compute_dtype)
        mx_block_scale(torch.ones(1), self.elem, scale_rule)  # validates the rule
        self.scale_rule = scale_rule
        self.fmt = next(name for name, elems in MX_ELEMENTS.items() if elem in elems)

    def _params(self, xmin: Tensor, xmax: Tensor) -> tuple[Tensor, None]:
        absmax = torch.maximum(xmin.abs(), xmax.abs())
        return mx_block_scale(absmax, self.elem, self.scale_rule).to(self.compute_dtype), None

    def _describe(self) -> str:
        return f"elem={self.elem.name!r}, scale_rule={self.scale_rule!r}"


class NVFP4Quantizer(_BlockQuantizer):
    """NVFP4: e2m1 elements in blocks of 16 with e4m3 block scales under a per-tensor fp32 global scale
    ``g = 2688 / absmax`` of the tensor being quantized. The public (dequantization) scale of a block is
    ``e4m3_scale / g``; :meth:`quantize` also returns ``g``."""

    fmt = "nvfp4"

    def __init__(self, block_size: int = NVFP4_BLOCK, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__("e2m1", block_size, compute_dtype)

    def _block_scales(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(e4m3 block scales in the grouped view (n, 1), global scale) of a whole tensor."""
        g = nvfp4_global_scale(x)
        absmax = self._grouped(x.to(self.compute_dtype)).abs().amax(dim=-1, keepdim=True)
        return nvfp4_block_scale(absmax, g), g

    def qparams(self, x: Tensor) -> tuple[Tensor, None]:
        s8, g = self._block_scales(x)
        return self._public(s8.float() / g, x.shape).to(self.compute_dtype), None

    def quantize(self, x: Tensor) -> BlockQTensor:
        s8, g = self._block_scales(x)
        scale = self._public(s8.float() / g, x.shape).to(self.compute_dtype)
        q = super().quantize_with(x, scale)
        return BlockQTensor(q.codes, q.scale, None, q.granularity, q.group_size, q.dtype, self.fmt, g)

    def quantize_with(self, x: Tensor, scale: Tensor, zero: Tensor | None = None) -> BlockQTensor:
        """On a fixed grid (e.g. GPTQ's): the global scale is recovered as ``448 / max(scale)`` (the block holding
        the tensor's absmax has e4m3 scale 448 by construction); all-zero scales give :func:`nvfp4_global_scale`'s
        2688, as :meth:`quantize` of an all-zero tensor does."""
        q = super().quantize_with(x, scale, zero)
        top = scale.detach().float().amax()
        g = torch.where(top > 0, _E4M3_MAX / top, torch.full_like(top, NVFP4_GLOBAL_NUMERATOR))
        return BlockQTensor(q.codes, q.scale, None, q.granularity, q.group_size, q.dtype, self.fmt, g)

    def _params(self, xmin: Tensor, xmax: Tensor) -> tuple[Tensor, None]:  # pragma: no cover - qparams overridden
        raise NotImplementedError("NVFP4 block scales depend on the whole tensor; use qparams / quantize")

    def _describe(self) -> str:
        return "elem='e2m1', global_scale=2688/absmax"


def nvfp4_fake_static(x: Tensor, global_scale: Tensor, block_size: int = NVFP4_BLOCK) -> Tensor:
    """NVFP4 quantize-dequantize of activations with a fixed (calibrated) global scale, as lightx2v quantizes
    inputs at run time (``input_global_scale``), dynamic e4m3 block scales. Returns fp32, ``x``'s shape."""
    xf = x.float().reshape(-1, block_size)
    s = nvfp4_block_scale(xf.abs().amax(dim=-1, keepdim=True), global_scale).float() / global_scale.float()
    y = torch.where(s > 0, xf / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(xf))
    return (round_to_minifloat(y, "e2m1") * s).reshape(x.shape)


# ----------------------------------------------------------------------------------------------------------
# Static activation scales (lightx2v's nvfp4 and fp8-pertensor run time)
# ----------------------------------------------------------------------------------------------------------

#: lightx2v schemes whose activations are quantized on a calibrated static scale -> the stored scale's name.
STATIC_INPUT_SCHEMES = {"nvfp4": "input_global_scale", "fp8-pertensor": "input_scale"}
_ABSMAX_FLOOR = 1e-12  # an all-zero calibration input still gives a finite scale


def static_input_scheme(aq) -> str | None:
    """The static-scale scheme an activation quantizer deploys as (``"nvfp4"``: NVFP4 activations, whose global
    scale lightx2v always takes from calibration; ``"fp8-pertensor"``: a ``static`` e4m3 per-tensor
    FloatQuantizer), or None: dynamic scales (or no activation quantization)."""
    if isinstance(aq, NVFP4Quantizer):
        return "nvfp4"
    if getattr(aq, "static", False):
        return "fp8-pertensor"
    return None


def static_input_scale(scheme: str, absmax: Tensor) -> Tensor:
    """The static activation scale lightx2v runs with, from the calibrated max |x| of the linear's input (0-dim
    fp32; the number the export stores, and the emulated runtime and the fake-quant model use): nvfp4's
    ``input_global_scale = 2688 / absmax``, fp8-pertensor's ``input_scale = absmax / 448``."""
    amax = absmax.detach().float().clamp_min(_ABSMAX_FLOOR).reshape(())
    if scheme == "nvfp4":
        return NVFP4_GLOBAL_NUMERATOR / amax  # as lightx2v derives it: (2688 / input_absmax).float()
    if scheme == "fp8-pertensor":
        return amax / _E4M3_MAX
    raise ValueError(f"scheme must be one of {sorted(STATIC_INPUT_SCHEMES)}, got {scheme!r}")


def fake_static_input(scheme: str, x: Tensor, scale: Tensor) -> Tensor:
    """Quantize-dequantize activations on a static scale as lightx2v's kernels do (fp32): nvfp4 with the global
    scale ``scale`` and dynamic e4m3 block scales (:func:`nvfp4_fake_static`); fp8-pertensor
    ``e4m3(clamp(x / scale, ±448)) · scale``. Each row depends only on itself and the scale."""
    if scheme == "nvfp4":
        return nvfp4_fake_static(x, scale)
    if scheme == "fp8-pertensor":
        return torch.clamp(x.float() / scale, -_E4M3_MAX, _E4M3_MAX).to(torch.float8_e4m3fn).float() * scale
    raise ValueError(f"scheme must be one of {sorted(STATIC_INPUT_SCHEMES)}, got {scheme!r}")


class StaticInputQuantizer:
    """A linear's activation quantizer with its calibrated static scale: the ``aq`` of a deployed
    :class:`~vidquant.quant.linear.FakeQuantLinear` for nvfp4 / fp8-pertensor, computing what lightx2v's run time
    (and :class:`~vidquant.runtime.emulated.EmulatedLinear`) computes. ``fake`` returns ``x``'s dtype."""

    granularity = "per_tensor"  # one fixed scale for the tensor: no statistic of the batch is taken

    def __init__(self, scheme: str, scale: Tensor) -> None:
        if scheme not in STATIC_INPUT_SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(STATIC_INPUT_SCHEMES)}, got {scheme!r}")
        self.scheme, self.scale = scheme, scale.detach().float().reshape(())

    @classmethod
    def from_absmax(cls, scheme: str, absmax: Tensor, device: torch.device | str | None = None
                    ) -> StaticInputQuantizer:
        """The scale derived on the CPU as the export derives it, then held on ``device`` (the linear's)."""
        return cls(scheme, static_input_scale(scheme, absmax.cpu()).to(device))

    def fake(self, x: Tensor) -> Tensor:
        return fake_static_input(self.scheme, x, self.scale.to(x.device)).to(x.dtype)

    def __repr__(self) -> str:
        return f"StaticInputQuantizer({self.scheme!r}, {STATIC_INPUT_SCHEMES[self.scheme]}={self.scale.item():.6g})"


def build_block_quantizer(spec, compute_dtype: torch.dtype | None = None) -> MXQuantizer | NVFP4Quantizer:
    """From a config ``QuantSpec`` (``quant_type`` mx-quant / nvfp4-quant, element format in ``bit``)."""
    block = getattr(spec, "block_size", None)
    if spec.quant_type == "nvfp4-quant":
        if spec.bit != "e2m1":
            raise ValueError(f"nvfp4-quant needs bit 'e2m1', got {spec.bit!r}")
        return NVFP4Quantizer(block or NVFP4_BLOCK, compute_dtype)
    if spec.quant_type == "mx-quant":
        return MXQuantizer(str(spec.bit), block or MX_BLOCK, compute_dtype=compute_dtype)
    raise ValueError(f"quant_type must be 'mx-quant' or 'nvfp4-quant', got {spec.quant_type!r}")
