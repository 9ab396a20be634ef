"""A fast int8 W8A8 linear for x86 CPUs: oneDNN's VNNI/AMX int8 GEMM on a pre-packed weight, with the
per-token activation quantization and the dequantization epilogue each fused into one generated kernel.

Why eager :class:`~vidquant.quant.linear.W8A8Linear` is slower than bf16 on a CPU (measured, see
``results/benchmarks/README.md``):

* ``torch._int_mm`` on the CPU takes oneDNN's generic ``gemm_api`` s8×s8 path: the weight is re-laid-out on
  every call and x86's int8 dot-product instructions (``vpdpbusd``, AMX ``tdpbusd``) multiply *unsigned* by
  signed bytes, so signed activations need extra work. oneDNN's ``matmul`` with a signed (s8) source falls
  back to a reference kernel hundreds of times slower still (``ref_int8``), which is what Inductor's own
  ``_int_mm`` freezing pattern hits on CPUs without AMX.
* The per-token quantization is seven passes over the activations (``float``, ``abs``, ``amax``, ``/``,
  ``round``, ``clamp``, ``to``), the int32 product is twice the size of a bf16 one, and the epilogue is three
  more passes, each allocating fresh memory.

What :class:`FastW8A8Linear` does instead, for the same function:

1. One generated kernel (``torch.compile`` of :func:`quantize_act_u8`, the arithmetic of
   :func:`~vidquant.quant.linear.quantize_act_per_token`) reads each token row and writes ``codes + 128`` as
   uint8 plus the fp32 scale. The +128 shift is exact: it turns
   the symmetric int8 codes into the unsigned operand the instructions want, with zero point 128.
2. ``onednn.qlinear_pointwise`` runs the brgemm VNNI/AMX int8 kernel on a weight packed once (with its
   zero-point compensation): ``acc = (q + 128 − 128) · Wᵀ``, exact int32 accumulation, fp32 out.
3. One generated kernel computes ``acc · s_a · s_wᵀ + b`` in fp32, in W8A8Linear's order, and casts to the
   activation dtype once.

Same codes, same scales, exact int32 sums, same fp32 operation order: the output is bit-identical to eager
W8A8Linear (tests/test_fast_w8a8.py).

Only the CPU int8 path is accelerated; fp8 and other devices use W8A8Linear's own forward. The packed weight
is a second copy of the int8 codes (the ``weight`` buffer stays, for the state_dict and for other devices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .linear import _INT8_MIN_SCALE, _INT8_QMAX, W8A8Linear

__all__ = ["FastW8A8Linear", "enable_fast_w8a8", "fast_path_available", "quantize_act_u8"]

_U8_ZERO_POINT = 128


@functools.cache
def fast_path_available() -> bool:
    """True on an x86 CPU build of torch with oneDNN's quantized linear ops (``onednn.qlinear_*``)."""
    try:
        ops = torch.ops.onednn
        return bool(torch.backends.mkldnn.is_available()) and hasattr(ops, "qlinear_prepack") \
            and not torch.ops.mkldnn._is_mkldnn_acl_supported()
    except (AttributeError, RuntimeError):
        return False


def quantize_act_u8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token int8 quantization stored as ``codes + 128`` in uint8 (zero point 128), and the fp32 scale.

    The arithmetic is :func:`~vidquant.quant.linear.quantize_act_per_token`'s (``fmt="int8"``) step for step;
    only the storage is shifted, in fp32 where it is exact (the codes are integers in [-128, 127]). Written
    without integer intermediates so that Inductor vectorises the whole kernel.
    """
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / _INT8_QMAX).clamp_min(_INT8_MIN_SCALE)
    shifted = torch.clamp(torch.round(xf / scale), -128.0, 127.0) + float(_U8_ZERO_POINT)
    return shifted.to(torch.uint8), scale


@torch.library.custom_op("vidquant::onednn_qlinear_u8", mutates_args=())
def _qlinear(q_u8: Tensor, packed: Tensor, ones: Tensor) -> Tensor:
    """oneDNN int8 GEMM: ``(q_u8 − 128) · Wᵀ`` as fp32, W the packed (out, in) int8 codes.

    ``ones`` is the (out,) weight-scale vector oneDNN requires, all ones: the real scales are applied in the
    epilogue in W8A8Linear's order, which keeps the result bit-identical to the eager module.

    A custom op so that ``torch.compile`` keeps it as one opaque call (Inductor's own lowering of
    ``qlinear_pointwise`` insists on a frozen constant weight).
    """
    return torch.ops.onednn.qlinear_pointwise(
        q_u8, 1.0, _U8_ZERO_POINT, packed, ones, None, None, 1.0, 0, torch.float32, "none", [None], ""
    )


@_qlinear.register_fake
def _(q_u8: Tensor, packed: Tensor, ones: Tensor) -> Tensor:
    return q_u8.new_empty((q_u8.shape[0], ones.shape[0]), dtype=torch.float32)


def _epilogue(acc: Tensor, s_a: Tensor, w_scale_t: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """W8A8Linear's epilogue, same operation order: ``acc · s_a · s_wᵀ (+ b)``, then one cast."""
    out = acc * s_a * w_scale_t
    if bias is not None:
        out = out + bias.float()
    return out.to(dtype)


def _forward(x2d: Tensor, packed: Tensor, ones: Tensor, w_scale_t: Tensor, bias: Tensor | None,
             dtype: torch.dtype) -> Tensor:
    """The whole fast forward on 2-D input; compiled as one graph (two fused kernels around the oneDNN call)."""
    q_u8, s_a = quantize_act_u8(x2d)
    return _epilogue(_qlinear(q_u8, packed, ones), s_a, w_scale_t, bias, dtype)


@functools.cache
def _compiled_forward() -> Callable[..., Tensor]:
    return torch.compile(_forward, dynamic=True)


class FastW8A8Linear(W8A8Linear):
    """An int8 :class:`W8A8Linear` whose CPU forward runs the fused oneDNN path (see the module docstring).

    Buffers and state_dict are W8A8Linear's (``weight``, ``weight_scale``, ``bias``); the packed weight is a
    non-persistent buffer. On another device, or with ``compiled=False`` and no oneDNN, it behaves exactly as
    W8A8Linear. ``compiled=False`` runs the same three steps eagerly (for machines without a C++ compiler).
    """

    def __init__(self, weight: Tensor, weight_scale: Tensor, bias: Tensor | None, fmt: str = "int8",
                 compiled: bool = True) -> None:
        if fmt != "int8":
            raise ValueError(f"FastW8A8Linear accelerates int8 only, got fmt={fmt!r}")
        super().__init__(weight, weight_scale, bias, fmt)
        self.compiled = compiled
        self.register_buffer("packed_weight", self._pack(), persistent=False)
        self.register_buffer("_ones", torch.ones(self.out_features, device=weight.device), persistent=False)

    def _pack(self) -> Tensor | None:
        if not fast_path_available() or self.weight.device.type != "cpu":
            return None
        return torch.ops.onednn.qlinear_prepack(self.weight.contiguous(), None)

    @classmethod
    def from_w8a8(cls, linear: W8A8Linear, compiled: bool = True) -> FastW8A8Linear:
        """Wrap an int8 W8A8Linear's buffers (shared, not copied) and pack the weight for oneDNN."""
        return cls(linear.weight, linear.weight_scale, linear.bias, linear.fmt, compiled)

    def forward(self, x: Tensor) -> Tensor:
        packed = self.packed_weight
        if packed is None or x.device.type != "cpu" or packed.device.type != "cpu" or x.numel() == 0:
            return super().forward(x)
        lead = x.shape[:-1]
        fn = _compiled_forward() if self.compiled else _forward
        out = fn(x.reshape(-1, self.in_features), packed, self._ones, self.weight_scale.t(), self.bias, x.dtype)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", onednn={self.packed_weight is not None}, compiled={self.compiled}"


def enable_fast_w8a8(model: nn.Module, compiled: bool = True) -> int:
    """Swap every int8 :class:`W8A8Linear` in ``model`` for a :class:`FastW8A8Linear` (in place).

    Buffers are shared, so the state_dict is unchanged. Returns how many layers were swapped (0 when the
    fast path is unavailable: then nothing changes). A bare W8A8Linear cannot be swapped in place: use
    :meth:`FastW8A8Linear.from_w8a8` for that.
    """
    if not fast_path_available():
        return 0
    targets = [(name, m) for name, m in model.named_modules()
               if name and type(m) is W8A8Linear and m.fmt == "int8" and m.weight.device.type == "cpu"]
    for name, m in targets:
        model.set_submodule(name, FastW8A8Linear.from_w8a8(m, compiled))
    return len(targets)
