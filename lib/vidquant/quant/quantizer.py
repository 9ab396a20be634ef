"""Integer and FP8 quantizers with LLMC's min-max formulas (reference: llmc_reference.md §7, §11 items 9-11).

All the arithmetic lives in four small functions near the top of this file:

* :func:`int_qparams` -- scale and zero point of an integer grid from per-slice min/max;
* :func:`int_encode` -- ``q = clamp(round(x / scale) + zero, qmin, qmax)`` (``torch.round``: half to even);
* :func:`float_encode` -- ``clamp(x / scale, ±fmax)`` rounded onto an fp8 grid;
* :func:`decode` -- ``(q - zero) * scale``, shared by both quantizer kinds.

The quantizer classes only add shape handling (which slice shares a scale) and dtype policy.

Granularities (LLMC semantics):

* ``per_tensor``: one scale for the whole tensor (a 0-dim tensor);
* ``per_channel`` / ``per_token``: one scale per slice of the last dim, keepdim. For a weight ``(out, in)``
  that is one scale per output row, shape ``(out, 1)``; for an activation ``[..., C]`` one per token,
  shape ``[..., 1]``. The two names are the same computation, as in LLMC;
* ``per_group``: ``group_size`` consecutive elements of the last dim share a scale; the public scale shape is
  ``(*lead, last_dim // group_size)``.

Precision: LLMC does every step in the input dtype (bf16 for Wan), so its scales are bf16 and ``x / scale``
is a bf16 quotient. Here the default compute dtype is fp32 (scales are kept fp32); pass
``compute_dtype=torch.bfloat16`` to reproduce LLMC's arithmetic for parity checks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "GRANULARITIES",
    "FP8_FORMATS",
    "QTensor",
    "IntQuantizer",
    "FloatQuantizer",
    "Quantizer",
    "int_qparams",
    "int_encode",
    "float_encode",
    "decode",
]

GRANULARITIES = ("per_tensor", "per_channel", "per_group", "per_token")

#: Floor on absmax / (max - min), as in LLMC: keeps all-zero slices from dividing by zero.
SCALE_EPS = 1e-5

#: fmt -> (fp8 dtype, exponent bits, mantissa bits). The max is torch.finfo(dtype).max (448 / 57344).
FP8_FORMATS: dict[str, tuple[torch.dtype, int, int]] = {
    "e4m3": (torch.float8_e4m3fn, 4, 3),
    "e5m2": (torch.float8_e5m2, 5, 2),
}


# ----------------------------------------------------------------------------------------------------------
# The maths
# ----------------------------------------------------------------------------------------------------------


def int_qparams(
    xmin: Tensor, xmax: Tensor, qmin: int, qmax: int, symmetric: bool
) -> tuple[Tensor, Tensor | None]:
    """Scale and zero point of an integer grid ``[qmin, qmax]`` from min/max (same dtype as the inputs).

    Symmetric: ``scale = clamp_min(max(|min|, |max|), 1e-5) / qmax`` and no zero point. Note the divisor is
    ``qmax`` (127 for int8) although codes clamp down to ``qmin`` (-128).
    Asymmetric: ``scale = clamp_min(max - min, 1e-5) / (qmax - qmin)`` and
    ``zero = clamp(qmin - round(min / scale), qmin, qmax)`` (rounded). Like LLMC, the range is *not* widened
    to include 0, so a slice with ``min > 0`` gets ``zero = qmin`` after the clamp.
    """
    if symmetric:
        absmax = torch.maximum(xmax.abs(), xmin.abs()).clamp_min(SCALE_EPS)
        return absmax / qmax, None
    scale = (xmax - xmin).clamp_min(SCALE_EPS) / (qmax - qmin)
    zero = torch.clamp(qmin - torch.round(xmin / scale), qmin, qmax)
    return scale, zero


def int_encode(x: Tensor, scale: Tensor, zero: Tensor | None, qmin: int, qmax: int) -> Tensor:
    """``clamp(round(x / scale) + zero, qmin, qmax)`` in ``x``'s dtype; integer-valued, not yet cast."""
    q = torch.round(x / scale)  # torch.round: ties to even (2.5 -> 2, 3.5 -> 4)
    if zero is not None:
        q = q + zero
    return torch.clamp(q, qmin, qmax)


def float_encode(
    x: Tensor, scale: Tensor, fmt: str, rounder: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """``clamp(x / scale, ±fmax)`` rounded onto the fp8 grid of ``fmt``; returns the fp8 tensor.

    ``rounder=None`` rounds with torch's cast (ties to even). A rounder (qtorch's ``float_quantize``) receives
    the clamped fp32 quotient and must return fp32 values already on the grid; the final cast is then exact.
    """
    dtype = FP8_FORMATS[fmt][0]
    fmax = torch.finfo(dtype).max
    # Clamp before casting: cast overflow behaviour has differed across torch versions (lightx2v §9 item 12).
    y = torch.clamp(x / scale, -fmax, fmax)
    if rounder is not None:
        y = rounder(y.float())
    return y.to(dtype)


def decode(codes: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
    """``(codes - zero) * scale``, computed in ``scale``'s dtype (fp8 codes have no zero point)."""
    q = codes.to(scale.dtype)
    if zero is not None:
        q = q - zero.to(scale.dtype)
    return q * scale


# ----------------------------------------------------------------------------------------------------------
# Quantized tensor container
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QTensor:
    """A quantized tensor: codes in the original shape plus what is needed to dequantize them.

    Attributes:
        codes: int8 / uint8 / float8 codes, same shape as the source tensor.
        scale: dequantization multiplier (``x ≈ (codes - zero) * scale``); shape ``()`` per_tensor,
            ``(*lead, 1)`` per_channel/per_token, ``(*lead, last // group_size)`` per_group.
        zero: zero point with the scale's shape, or None (symmetric int and all fp8 formats).
        granularity: one of :data:`GRANULARITIES`.
        group_size: elements per group along the last dim (per_group only, else -1).
        dtype: dtype of the source tensor; :meth:`dequantize` returns this dtype.
    """

    codes: Tensor
    scale: Tensor
    zero: Tensor | None
    granularity: str
    group_size: int = -1
    dtype: torch.dtype = torch.float32

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self) -> Tensor:
        """``(codes - zero) * scale`` in the scale's dtype, cast back to :attr:`dtype`.

        Per-group params in the public shape are matched to their groups; any other params (e.g. one column's
        ``(out, 1)`` slice from :meth:`_BaseQuantizer.quantize_with`) simply broadcast against the codes.
        """
        codes, scale, zero = self.codes, self.scale, self.zero
        g = self.group_size
        if self.granularity == "per_group" and scale.dim() >= 1 and scale.shape[-1] * g == codes.shape[-1]:
            codes = codes.reshape(-1, g)
            scale = scale.reshape(-1, 1)
            zero = None if zero is None else zero.reshape(-1, 1)
        return decode(codes, scale, zero).reshape(self.shape).to(self.dtype)


# ----------------------------------------------------------------------------------------------------------
# Quantizers
# ----------------------------------------------------------------------------------------------------------


class _BaseQuantizer:
    """Shape handling and the public API shared by :class:`IntQuantizer` and :class:`FloatQuantizer`.

    Subclasses implement ``_params(xmin, xmax)``, ``_encode(x, scale, zero)`` and ``code_dtype``.
    """

    code_dtype: torch.dtype

    def __init__(self, granularity: str, group_size: int, compute_dtype: torch.dtype | None) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if granularity == "per_group" and (group_size is None or group_size <= 0):
            raise ValueError(f"per_group needs a positive group_size, got group_size={group_size}")
        if compute_dtype is not None and not compute_dtype.is_floating_point:
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype}")
        self.granularity = granularity
        # group_size only means something for per_group; normalise so QTensor/reprs are unambiguous.
        self.group_size = int(group_size) if granularity == "per_group" else -1
        self.compute_dtype = compute_dtype or torch.float32

    # --- subclass hooks ---------------------------------------------------------------------------------
    def _params(self, xmin: Tensor, xmax: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _encode(self, x: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
        raise NotImplementedError

    # --- shape helpers ------------------------------------------------------------------------------------
    def _grouped(self, x: Tensor) -> Tensor:
        """View of ``x`` in which each slice of the last dim shares one scale (identity unless per_group)."""
        if self.granularity != "per_group":
            return x
        if x.dim() == 0 or x.shape[-1] % self.group_size != 0:
            last = x.shape[-1] if x.dim() else 0
            raise ValueError(
                f"per_group: last dim (in_features) = {last} is not divisible by "
                f"group_size = {self.group_size}"
            )
        return x.reshape(-1, self.group_size)

    def _minmax(self, xg: Tensor) -> tuple[Tensor, Tensor]:
        if self.granularity == "per_tensor":
            return xg.amin(), xg.amax()
        # per_channel, per_token and per_group all reduce over the last dim of the (grouped) view.
        return xg.amin(dim=-1, keepdim=True), xg.amax(dim=-1, keepdim=True)

    def _public(self, p: Tensor | None, shape: torch.Size) -> Tensor | None:
        """Grouped-view parameter -> public shape ``(*lead, last // group_size)``."""
        if p is None or self.granularity != "per_group":
            return p
        return p.reshape(*shape[:-1], shape[-1] // self.group_size)

    def _cast(self, p: Tensor | None) -> Tensor | None:
        return None if p is None else p.to(self.compute_dtype)

    def _broadcastable(self, p: Tensor | None, x: Tensor) -> Tensor | None:
        """Make a supplied parameter broadcast against ``x``, expanding public per-group shapes."""
        if p is None:
            return None
        p = p.to(self.compute_dtype)
        g = self.group_size
        is_group_shaped = (
            self.granularity == "per_group" and p.dim() >= 1 and x.dim() >= 1 and g > 1
            and p.shape[-1] * g == x.shape[-1]
        )
        return p.repeat_interleave(g, dim=-1) if is_group_shaped else p

    # --- public API ---------------------------------------------------------------------------------------
    def qparams(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Dynamic (min-max) ``(scale, zero)`` of ``x`` in the public shape; zero is None when symmetric."""
        scale, zero = self._params(*self._minmax(self._grouped(x.to(self.compute_dtype))))
        return self._public(scale, x.shape), self._public(zero, x.shape)

    def quantize(self, x: Tensor) -> QTensor:
        """Real quantization with dynamic parameters: codes in :attr:`code_dtype` plus scale/zero."""
        xg = self._grouped(x.to(self.compute_dtype))
        scale, zero = self._params(*self._minmax(xg))
        codes = self._encode(xg, scale, zero).to(self.code_dtype).reshape(x.shape)
        return QTensor(
            codes=codes,
            scale=self._public(scale, x.shape),
            zero=self._public(zero, x.shape),
            granularity=self.granularity,
            group_size=self.group_size,
            dtype=x.dtype,
        )

    def dequantize(self, q: QTensor) -> Tensor:
        """Inverse of :meth:`quantize` (to the source dtype)."""
        return q.dequantize()

    def fake(self, x: Tensor) -> Tensor:
        """Quantize-dequantize with dynamic parameters; returns ``x``'s dtype and shape."""
        return self.quantize(x).dequantize()

    def quantize_with(self, x: Tensor, scale: Tensor, zero: Tensor | None = None) -> QTensor:
        """Real quantization with *given* (static) parameters, e.g. a grid chosen by calibration or GPTQ.

        ``scale``/``zero`` must broadcast against ``x``, or (per_group) have the public per-group shape of
        ``x`` (what :meth:`qparams` returns). They are stored in the compute dtype.
        """
        xc = x.to(self.compute_dtype)
        s, z = self._cast(scale), self._cast(zero)
        codes = self._encode(xc, self._broadcastable(s, xc), self._broadcastable(z, xc)).to(self.code_dtype)
        return QTensor(codes, s, z, self.granularity, self.group_size, x.dtype)

    def fake_with(self, x: Tensor, scale: Tensor, zero: Tensor | None = None) -> Tensor:
        """Quantize-dequantize ``x`` with given parameters (see :meth:`quantize_with`); returns ``x``'s dtype.

        GPTQ's column step is ``fake_with(w[:, i:i+1], scale[:, j:j+1], zero[:, j:j+1])`` with ``scale, zero``
        from :meth:`qparams` of the full weight (``j = 0`` per_channel, ``j = i // group_size`` per_group).
        """
        return self.quantize_with(x, scale, zero).dequantize()

    def __repr__(self) -> str:
        extra = f", group_size={self.group_size}" if self.granularity == "per_group" else ""
        return f"{type(self).__name__}({self._describe()}, granularity={self.granularity!r}{extra})"

    def _describe(self) -> str:
        raise NotImplementedError


class IntQuantizer(_BaseQuantizer):
    """Uniform integer min-max quantizer (LLMC ``IntegerQuantizer`` with ``calib_algo: minmax``).

    Args:
        bit: 2..8.
        symmetric: True -> grid ``[-2^(b-1), 2^(b-1)-1]``, no zero point; False -> ``[0, 2^b-1]`` with zero.
        granularity: see the module docstring.
        group_size: elements per group (per_group only; ignored otherwise).
        compute_dtype: arithmetic dtype; None = fp32. ``torch.bfloat16`` reproduces LLMC.

    Codes are int8, except 8-bit asymmetric which is uint8 (0..255). LLMC stores widths below 8 as int32;
    every such grid fits in int8, so we keep int8.
    """

    def __init__(
        self,
        bit: int,
        symmetric: bool = True,
        granularity: str = "per_channel",
        group_size: int = -1,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        bit = int(bit)
        if not 2 <= bit <= 8:
            raise ValueError(f"IntQuantizer supports 2..8 bits, got bit={bit}")
        super().__init__(granularity, group_size, compute_dtype)
        self.bit = bit
        self.symmetric = bool(symmetric)
        if self.symmetric:
            self.qmin, self.qmax = -(2 ** (bit - 1)), 2 ** (bit - 1) - 1
        else:
            self.qmin, self.qmax = 0, 2**bit - 1
        self.code_dtype = torch.uint8 if (bit == 8 and not self.symmetric) else torch.int8

    def _params(self, xmin: Tensor, xmax: Tensor) -> tuple[Tensor, Tensor | None]:
        return int_qparams(xmin, xmax, self.qmin, self.qmax, self.symmetric)

    def _encode(self, x: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
        return int_encode(x, scale, zero, self.qmin, self.qmax)

    def _describe(self) -> str:
        return f"bit={self.bit}, symmetric={self.symmetric}"


class FloatQuantizer(_BaseQuantizer):
    """Symmetric FP8 quantizer: ``scale = clamp_min(absmax, 1e-5) / fmax``, ``q = fp8(clamp(x/s, ±fmax))``.

    Args:
        fmt: ``"e4m3"`` (float8_e4m3fn, max 448) or ``"e5m2"`` (float8_e5m2, max 57344).
        granularity: see the module docstring (``group_size`` for per_group).
        use_qtorch: round with qtorch 0.3.0 ``float_quantize(..., rounding="nearest")`` (ties away from zero,
            what LLMC's export and lightx2v's converter use) instead of torch's cast (ties to even). The two
            differ only on exact ties. qtorch is imported on first use (it JIT-compiles a C++ extension).
        compute_dtype: arithmetic dtype for ``x / scale``; None = fp32, ``torch.bfloat16`` = LLMC parity.
        static: as an activation quantizer (e4m3 per_tensor only), deployed with a calibrated static scale
            (lightx2v's fp8-pertensor ``input_scale``; :func:`vidquant.algos.deploy.deploy_fake_quant`). The
            quantizer's own methods still take the scale from the tensor they are given.

    Note: LLMC's own ``use_qtorch: False`` is a different, fake-only per-element format (llmc_reference §7.4);
    here ``use_qtorch=False`` means "same fp8 grid, rounded by torch's cast".
    """

    def __init__(
        self,
        fmt: str = "e4m3",
        granularity: str = "per_channel",
        use_qtorch: bool = False,
        group_size: int = -1,
        compute_dtype: torch.dtype | None = None,
        static: bool = False,
    ) -> None:
        if fmt not in FP8_FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FP8_FORMATS)}, got {fmt!r}")
        if static and (fmt, granularity) != ("e4m3", "per_tensor"):
            raise ValueError(f"static scales are e4m3 per_tensor only (fp8-pertensor), got {fmt} {granularity}")
        super().__init__(granularity, group_size, compute_dtype)
        self.static = bool(static)
        self.fmt = fmt
        self.use_qtorch = bool(use_qtorch)
        self.code_dtype, self.exp_bits, self.man_bits = FP8_FORMATS[fmt]
        self.fmax = torch.finfo(self.code_dtype).max
        self.symmetric = True

    def _params(self, xmin: Tensor, xmax: Tensor) -> tuple[Tensor, Tensor | None]:
        absmax = torch.maximum(xmax.abs(), xmin.abs()).clamp_min(SCALE_EPS)
        return absmax / self.fmax, None

    def _encode(self, x: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
        if zero is not None:
            raise ValueError("FloatQuantizer is symmetric: zero must be None")
        rounder = self._qtorch_rounder() if self.use_qtorch else None
        return float_encode(x, scale, self.fmt, rounder)

    def _qtorch_rounder(self) -> Callable[[Tensor], Tensor]:
        float_quantize = _import_qtorch_float_quantize()
        return functools.partial(float_quantize, exp=self.exp_bits, man=self.man_bits, rounding="nearest")

    def _describe(self) -> str:
        return f"fmt={self.fmt!r}, use_qtorch={self.use_qtorch}" + (", static=True" if self.static else "")


Quantizer = IntQuantizer | FloatQuantizer


@functools.cache
def _import_qtorch_float_quantize() -> Callable[..., Tensor]:
    """Import qtorch on first use: the import JIT-compiles a C++ (and, with CUDA, a CUDA) extension."""
    try:
        from qtorch.quant import float_quantize
    except Exception as e:  # ImportError, or a compiler/ninja failure surfacing as another exception type
        raise ImportError(
            "FloatQuantizer(use_qtorch=True) needs qtorch==0.3.0, which compiles a C++ extension on first "
            "import (needs a C++ compiler and ninja; nvcc too when CUDA is present). Install it or use "
            f"use_qtorch=False (torch cast, ties-to-even). Original error: {type(e).__name__}: {e}"
        ) from e
    return float_quantize
