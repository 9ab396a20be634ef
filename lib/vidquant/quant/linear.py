"""Deploy-time linear modules: fake-quant (LLMC eval) and real W8A8 (what lightx2v computes).

* :class:`FakeQuantLinear` -- LLMC's ``EffcientFakeQuantLinear``: the weight is fake-quantized once,
  activations are fake-quantized on every call by its ``aq`` (dynamic scales, or a calibrated static one:
  :class:`~vidquant.quant.blockfmt.StaticInputQuantizer`).
* :class:`W8A8Linear` -- per-output-channel symmetric int8 / fp8-e4m3 weight codes and per-token dynamic
  activation quantization, with the epilogue
  ``out[m, n] = s_a[m] * s_w[n] * sum_k q_a[m, k] q_w[n, k] + b[n]`` (lightx2v_reference §3.1), computed with
  an exact int8 GEMM (int32 sums: on the CPU the fastest path proven exact on this machine,
  :mod:`vidquant.quant.int8_gemm`; ``torch._int_mm`` on CUDA) or ``torch._scaled_mm`` (fp32 accumulation). Its
  buffers are named ``weight``, ``weight_scale``, ``bias`` like lightx2v's checkpoint.

Two numerics for the per-token activation quantization (:data:`NUMERICS`):

* ``"vidquant"`` -- ``q = round(x / s)``: the division of LLMC's fake quant, i.e. what calibration measured.
* ``"lightx2v"`` -- what lightx2v's kernels compute (vllm ``scaled_int8_quant`` / ``scaled_fp8_quant``,
  lightx2v_reference §3.1): int8 ``q = round(x · (127 / absmax))``, fp8 ``q = fp8(x · (1 / s))``, i.e. a
  multiplication by a rounded reciprocal (about 3e-4 of int8 codes and 5e-4 of fp8 codes move by one step), and
  the epilogue in CUTLASS's order ``s_a · (s_w · acc) + b``. Together with bf16-rounded weight scales
  (``round_scale_bf16``, lightx2v's loader) this is ``vidquant infer``'s default. Not reproduced: the fused
  multiply-add of the CUTLASS epilogue (at most one fp32 rounding before the cast to the output dtype).
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .int8_gemm import int8_path
from .quantizer import FloatQuantizer, IntQuantizer, Quantizer

log = logging.getLogger("vidquant.quant")

__all__ = [
    "NUMERICS",
    "FakeQuantLinear",
    "W8A8Linear",
    "W8A8_FORMATS",
    "quantize_act_per_token",
    "quantize_weight_per_channel",
]

#: Activation-quantization numerics: ours (LLMC's division) and lightx2v's kernels' (reciprocal multiply).
NUMERICS = ("vidquant", "lightx2v")
#: fmt -> weight/activation code dtype.
W8A8_FORMATS: dict[str, torch.dtype] = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}

_INT8_QMAX = 127.0
_FP8_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
# vllm's per-token fp8 quant floors the scale at 1/(448*512) (lightx2v_reference §3.1, §9 item 11).
_FP8_MIN_SCALE = 1.0 / (_FP8_MAX * 512.0)
# All-zero (padding) tokens give absmax 0; flooring the int8 scale at the smallest normal fp32 keeps
# x / s finite (0 / tiny = 0) without changing any non-degenerate token.
_INT8_MIN_SCALE = torch.finfo(torch.float32).tiny
# CUDA's _int_mm needs more than 16 rows (CPU accepts any M); padding is cheap and keeps one code path.
_INT_MM_MIN_ROWS = 17


def _check_fmt(fmt: str, numerics: str = "vidquant") -> None:
    if fmt not in W8A8_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(W8A8_FORMATS)}, got {fmt!r}")
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")


def _act_codes(x: Tensor, fmt: str, numerics: str) -> tuple[Tensor, Tensor]:
    """The per-token maths in fp32: ``(codes as fp32 values on the code grid, scale (…, 1))``.

    In place on one fp32 working copy (a fresh allocation per pass costs more than the arithmetic on a CPU).
    """
    xf = x.float()
    if xf is x or xf.data_ptr() == x.data_ptr():  # already fp32: never write into the caller's tensor
        xf = x.clone()
    # max |x| per token as max(max x, -min x): two reductions, no |x| temporary (measured 2x faster than
    # abs().amax() and 20x faster than vector_norm(inf) on a 1024 x 1536 activation)
    absmax = torch.maximum(xf.amax(dim=-1, keepdim=True), xf.amin(dim=-1, keepdim=True).neg())
    qmax, min_scale = (_INT8_QMAX, _INT8_MIN_SCALE) if fmt == "int8" else (_FP8_MAX, _FP8_MIN_SCALE)
    if numerics == "vidquant":
        scale = (absmax / qmax).clamp_min(min_scale)
        xf.div_(scale)
    elif fmt == "int8":  # vllm: s = absmax / 127, q = x * (127 / absmax); an all-zero token gives codes 0
        scale = absmax / qmax
        # a tensor numerator: torch computes `scalar / tensor` as `scalar * reciprocal(tensor)`, one more rounding
        xf.mul_(torch.where(absmax > 0, torch.full_like(absmax, qmax) / absmax, 0.0))
    else:  # vllm: s = max(absmax / 448, 1 / (448 * 512)), q = x * (1 / s)
        scale = (absmax / qmax).clamp_min(min_scale)
        xf.mul_(scale.reciprocal())
    if fmt == "int8":
        return xf.round_().clamp_(-128, 127), scale
    return xf.clamp_(-qmax, qmax), scale


def _int8_epilogue(acc: Tensor, s_a: Tensor, s_w_t: Tensor, bias: Tensor | None, numerics: str,
                   dtype: torch.dtype) -> Tensor:
    """``acc · s_a · s_w (+ b)`` in fp32 (in place on ``acc``), then one cast; lightx2v's numerics multiply in
    CUTLASS's order ``s_a · (s_w · acc) + b``."""
    out = acc.mul_(s_w_t).mul_(s_a) if numerics == "lightx2v" else acc.mul_(s_a).mul_(s_w_t)
    if bias is not None:
        out = out.add_(bias)
    return out.to(dtype)


#: Activation dtypes the compiled kernels are checked in (and used for); others run the eager kernels.
_KERNEL_DTYPES = (torch.bfloat16, torch.float32)


def _kernel_probe() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Inputs on which the compiled kernels must give the eager bits: bf16 activations ``x`` (33 tokens, 96
    channels spanning 1e-3..1e2 in scale: outliers) with an all-zero token, and an epilogue's integer-valued
    accumulators (33, 40) of magnitude ~1e4 with per-token / per-channel scales and a bf16 bias. Odd sizes, so
    that vector loops have tails. All drawn from one private generator: checking leaves the global RNG alone."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(33, 96, generator=g) * torch.logspace(-3, 2, 96)).bfloat16()
    x[1] = 0
    acc = (torch.randn(33, 40, generator=g) * 1e4).round()
    s_a, s_w = torch.rand(33, 1, generator=g), torch.rand(1, 40, generator=g)
    bias = torch.randn(40, generator=g).bfloat16()
    return x, acc, s_a, s_w, bias


@functools.cache
def _compiled_kernels(fmt: str, numerics: str) -> tuple[Callable, Callable] | None:
    """``torch.compile``-d activation quantization and epilogue for one (fmt, numerics): one fused pass each
    instead of 5-8. None (stay eager) where Inductor cannot build CPU kernels (no C++ compiler) or where they
    disagree with the eager functions, bit for bit, on a probe (:func:`_kernel_probe`) in bf16 and fp32."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        log.info("W8A8 kernels: eager (no C++ compiler for torch.compile)")
        return None
    # dynamic: one kernel for every token count (a static compile would rebuild for each new sequence length)
    act, epi = torch.compile(_act_codes, dynamic=True), torch.compile(_int8_epilogue, dynamic=True)
    x, acc, s_a, s_w, bias = _kernel_probe()
    try:
        # Each activation dtype is its own compiled graph. fp32 output also shows an epilogue that multiplies in
        # another order: a bf16 cast would round most such 1-ulp differences away.
        for dtype in _KERNEL_DTYPES:
            xd = x.to(dtype)
            if any(not torch.equal(a, b) for a, b in zip(act(xd, fmt, numerics), _act_codes(xd, fmt, numerics))):
                raise RuntimeError(f"compiled activation codes differ from the eager ones ({dtype})")
            if fmt == "int8" and not torch.equal(epi(acc.clone(), s_a, s_w, bias, numerics, dtype),
                                                 _int8_epilogue(acc.clone(), s_a, s_w, bias, numerics, dtype)):
                raise RuntimeError(f"compiled epilogue differs from the eager one ({dtype})")
    except Exception as e:  # any failure to build or to agree means: stay eager
        log.warning("W8A8 kernels (%s, %s): eager (torch.compile refused: %s)", fmt, numerics,
                    str(e).splitlines()[0][:200])
        return None
    log.info("W8A8 kernels (%s, %s): compiled, equal to eager on the probe", fmt, numerics)
    return act, epi


def quantize_act_per_token(x: Tensor, fmt: str, numerics: str = "vidquant") -> tuple[Tensor, Tensor]:
    """Dynamic symmetric per-token activation quant, as vllm's ``scaled_int8_quant`` / ``scaled_fp8_quant``.

    Args:
        x: ``[..., K]`` activations, any float dtype (computed in fp32).
        fmt: ``"int8"``: ``s = absmax / 127``, ``q = saturate_int8(round_half_even(x / s))``;
            ``"fp8"``: ``s = max(absmax / 448, 1 / (448 * 512))``, ``q = fp8_e4m3fn(clamp(x / s, ±448))``.
        numerics: ``"vidquant"`` divides by ``s`` as above; ``"lightx2v"`` multiplies by the reciprocal as
            lightx2v's kernels do (``x · (127 / absmax)``, ``x · (1 / s)``); see the module docstring.

    Returns:
        ``(codes, scale)``: codes ``[..., K]`` int8 / float8_e4m3fn and scale ``[..., 1]`` fp32, with
        ``x ≈ codes * scale``.
        No data-dependent Python control flow, so the function can be ``torch.compile``-d.
    """
    _check_fmt(fmt, numerics)
    codes, scale = _act_codes(x, fmt, numerics)
    return codes.to(W8A8_FORMATS[fmt]), scale


def quantize_weight_per_channel(weight: Tensor, fmt: str, use_qtorch: bool = False) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel weight quantization (the lightx2v converter's maths).

    Returns ``(codes (out, in) int8 | float8_e4m3fn, scale (out, 1) fp32)``; scale = clamp_min(absmax, 1e-5) /
    127 or / 448. ``use_qtorch`` (fp8 only) rounds ties away from zero as the converter does.
    """
    _check_fmt(fmt)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    quantizer: Quantizer
    if fmt == "int8":
        quantizer = IntQuantizer(8, symmetric=True, granularity="per_channel")
    else:
        quantizer = FloatQuantizer("e4m3", granularity="per_channel", use_qtorch=use_qtorch)
    q = quantizer.quantize(weight)
    return q.codes, q.scale.float()


class FakeQuantLinear(nn.Module):
    """``F.linear(aq.fake(x), w_fq, bias)`` with ``w_fq = wq.fake(weight)`` computed once at construction.

    ``weight`` (fake-quantized, the source dtype) and ``bias`` are buffers: this module is for evaluation,
    not training. ``aq`` is anything with ``fake(x)`` (a quantizer, or a static-scale
    :class:`~vidquant.quant.blockfmt.StaticInputQuantizer`); ``aq=None`` gives weight-only quantization.
    """

    def __init__(self, weight_fq: Tensor, bias: Tensor | None, aq: Quantizer | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_fq.shape
        self.register_buffer("weight", weight_fq)
        self.register_buffer("bias", bias)
        self.aq = aq

    @classmethod
    def from_linear(cls, linear: nn.Linear, wq: Quantizer, aq: Quantizer | None = None) -> FakeQuantLinear:
        """Fake-quantize ``linear.weight`` with ``wq``; ``aq`` fake-quantizes activations on every call."""
        weight = linear.weight.detach()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(wq.fake(weight), bias, aq)

    def forward(self, x: Tensor) -> Tensor:
        if self.aq is not None:
            x = self.aq.fake(x)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, aq={self.aq!r}"


class W8A8Linear(nn.Module):
    """Real W8A8 linear: int8 or fp8-e4m3 weight codes with per-channel scales, per-token dynamic activations.

    Buffers (lightx2v key names): ``weight`` (out, in) int8 | float8_e4m3fn codes, ``weight_scale`` (out, 1)
    fp32, ``bias`` (out,) in the source dtype or None (a None buffer is not written to the state_dict).
    No dequantized copy of the weight is kept. The output has the input's dtype and leading dims.
    """

    def __init__(self, weight: Tensor, weight_scale: Tensor, bias: Tensor | None, fmt: str,
                 numerics: str = "vidquant", compiled: bool = False) -> None:
        super().__init__()
        _check_fmt(fmt, numerics)
        if weight.dim() != 2 or weight.dtype != W8A8_FORMATS[fmt]:
            got = f"{weight.dtype} {tuple(weight.shape)}"
            raise ValueError(f"fmt={fmt!r} needs a 2-D {W8A8_FORMATS[fmt]} weight, got {got}")
        out_features, in_features = weight.shape
        if weight_scale.numel() != out_features:
            got = tuple(weight_scale.shape)
            raise ValueError(f"weight_scale must have {out_features} entries, got shape {got}")
        if bias is not None and bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {tuple(bias.shape)}")
        self.fmt, self.numerics = fmt, numerics
        # fused act-quant / epilogue kernels (torch.compile): same bits, ~5x fewer passes; first use compiles
        self.compiled = compiled
        self.in_features, self.out_features = in_features, out_features
        self._prepared: tuple | None = None  # (path name, weight version, device, the weight in its layout)
        self.register_buffer("weight", weight)
        # lightx2v upcasts any stored scale dtype to fp32 (out, 1); so do we.
        self.register_buffer("weight_scale", weight_scale.reshape(out_features, 1).float())
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = "int8", use_qtorch: bool = False) -> W8A8Linear:
        """Quantize ``linear.weight`` per output channel (fp32 maths) and keep the bias as is."""
        codes, scale = quantize_weight_per_channel(linear.weight.detach(), fmt, use_qtorch=use_qtorch)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(codes, scale, bias, fmt)

    @classmethod
    def from_quantized(
        cls, weight: Tensor, weight_scale: Tensor, bias: Tensor | None = None, fmt: str | None = None,
        numerics: str = "vidquant",
    ) -> W8A8Linear:
        """Wrap checkpoint tensors; ``fmt`` is inferred from the weight dtype when omitted."""
        if fmt is None:
            fmt = next((k for k, v in W8A8_FORMATS.items() if v == weight.dtype), None)
            if fmt is None:
                raise ValueError(f"cannot infer fmt from weight dtype {weight.dtype} (int8 or e4m3fn)")
        return cls(weight, weight_scale, bias, fmt, numerics)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> W8A8Linear:
        # Module.to(dtype) / .half() cast every floating buffer, fp8 included: a model-wide
        # model.to(torch.bfloat16) would turn the fp8 codes into bf16 and break _scaled_mm (LLMC hit the same,
        # llmc_reference §11 item 16). Restore the kernel dtypes afterwards; fp8 -> bf16/fp16 -> fp8 is exact.
        # A scale cast to bf16 on the way stays bf16-rounded, which is what lightx2v's loader does anyway.
        super()._apply(fn, recurse)
        code_dtype = W8A8_FORMATS[self.fmt]
        if self.weight.dtype != code_dtype:
            self.weight = self.weight.to(code_dtype)
        if self.weight_scale.dtype != torch.float32:
            self.weight_scale = self.weight_scale.float()
        return self

    def dequantized_weight(self) -> Tensor:
        """``weight * weight_scale`` in fp32 (a temporary, for references and debugging)."""
        return self.weight.float() * self.weight_scale

    def _cpu_weight(self):
        """The weight in the chosen CPU int8 path's layout, prepared once (again if the weight changes)."""
        path = int8_path()
        key = (path.name, self.weight._version, self.weight.data_ptr())
        if self._prepared is None or self._prepared[:3] != key:
            self._prepared = (*key, path.prepare(self.weight))
        return path, self._prepared[3]

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        fused = self.compiled and x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES  # the dtypes checked
        kernels = _compiled_kernels(self.fmt, self.numerics) if fused else None
        act, epilogue = kernels or (_act_codes, _int8_epilogue)
        codes, s_a = act(x.reshape(-1, self.in_features), self.fmt, self.numerics)
        if self.fmt == "fp8":
            out = _fp8_mm(codes.to(torch.float8_e4m3fn), self.weight, s_a, self.weight_scale)
            if self.bias is not None:
                out = out.add_(self.bias)
            return out.to(x.dtype).reshape(*lead, self.out_features)
        if x.device.type == "cpu":
            path, w = self._cpu_weight()
            acc = path.matmul(codes, w)
        else:
            acc = _int8_mm(codes.to(torch.int8), self.weight)
        return epilogue(acc, s_a, self.weight_scale.t(), self.bias, self.numerics, x.dtype).reshape(
            *lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt!r}, "
            f"bias={self.bias is not None}, numerics={self.numerics!r}"
        )


def _int8_mm(q_a: Tensor, q_w: Tensor) -> Tensor:
    """``q_a (M, K) @ q_w (N, K).T`` accumulated exactly in int32, then converted to fp32 (relative rounding
    error at most 2^-24, only for sums beyond 2^24)."""
    m = q_a.shape[0]
    if m < _INT_MM_MIN_ROWS:
        q_a = F.pad(q_a, (0, 0, 0, _INT_MM_MIN_ROWS - m))  # zero rows; sliced off below
    return torch._int_mm(q_a, q_w.t())[:m].float()


def _fp8_mm(q_a: Tensor, q_w: Tensor, s_a: Tensor, s_w: Tensor) -> Tensor:
    """Row-wise scaled fp8 GEMM ``s_a * (q_a @ q_w.T) * s_w.T`` (fp32 accumulation).

    ``scale_b`` must be a contiguous (1, N) tensor; the stored (N, 1) is rejected. CUDA's row-wise kernel only
    writes bf16 (fp32 output needs cuBLAS on sm90), so the output dtype is the one kernel-driven branch.
    """
    out_dtype = torch.float32 if q_a.device.type == "cpu" else torch.bfloat16
    out = torch._scaled_mm(
        q_a, q_w.t(), scale_a=s_a, scale_b=s_w.t().contiguous(), bias=None, out_dtype=out_dtype
    )
    return out.float()
