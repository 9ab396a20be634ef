"""Exact int8 GEMMs on any CPU: the kernels that exist, the CPUs each is exact on, and the self-check that
picks the fastest one that proves itself on this machine.

W8A8Linear's int8 forward needs ``acc[m, n] = Σ_k q_a[m, k] · q_w[n, k]`` exactly (int32, as lightx2v's CUDA
kernels accumulate it), returned as fp32 (``fp32(acc)``, correctly rounded beyond 2^24). A CPU offers three
ways, fastest first, whose correctness depends on the CPU class:

============  ===============================================  ==========================================
path          kernel                                           exact on (and why)
============  ===============================================  ==========================================
onednn-u8s8   oneDNN brgemm on ``codes + 128`` (u8) × s8, with  AVX-VNNI / AVX512-VNNI CPUs without AMX:
              a weight packed once and zero-point compensation  ``vpdpbusd`` accumulates u8·s8 in int32.
                                                               Without VNNI oneDNN uses ``vpmaddubsw``,
                                                               which saturates each pair of products at
                                                               int16 (12-27 % wrong); its AMX kernel rounds
                                                               sums past 2^24 to fp32 before the
                                                               compensation (1 ulp, measured).
int-mm        ``torch._int_mm`` (oneDNN's s8s8 GEMM)             VNNI / AMX CPUs (int32 dot products).
                                                               Elsewhere it saturates like u8s8
                                                               (measured with ONEDNN_MAX_CPU_ISA=AVX2) or
                                                               runs ~25× slower than fp32.
fp32-codes    fp32 GEMM over the codes, K in chunks of 1024,     every CPU with IEEE fp32 GEMMs (matmul
              chunk sums added in int32                        precision "highest"): a product is at most
                                                               128² and a 1024-long partial sum at most
                                                               2^24, so no operation ever rounds.
============  ===============================================  ==========================================

:func:`int8_path` chooses once per process: it walks the paths fastest first, skips those this CPU is not
declared exact on (``/proc/cpuinfo`` flags, ``ONEDNN_MAX_CPU_ISA``, the fp32 matmul precision), and runs the
first eligible one on a full-range probe (codes ±127 and -128, both signs, rows of extremes that saturate any
16-bit intermediate, K long enough to cross a chunk and 2^24) against an exact int64 reference. A path that
disagrees is refused with a warning and the next one is tried. One log line says which path runs and why.
All three paths return the same bits, so the choice changes speed, never results: runs are reproducible
across CPU classes and thread counts.

``VIDQUANT_INT8_PATH=<name>`` forces a path (still self-checked): for benchmarks and for tests.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CPU_CLASS_LIMITS",
    "INT8_PATHS",
    "Int8Path",
    "cpu_flags",
    "eligibility",
    "int8_path",
    "self_check",
    "use_int8_path",
]

log = logging.getLogger("vidquant.quant")

#: The longest K whose fp32 partial sums of code products are integers of magnitude ≤ 2^24 = 1024 · 128².
FP32_EXACT_CHUNK = 1024
_U8_ZERO_POINT = 128
_SINGLE_GEMM_BOUND = float(2**23)  # half of 2^24: room for the fp32 rounding of the bound itself
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# oneDNN ISA limits without an int8 dot product (oneDNN's ONEDNN_MAX_CPU_ISA names): u8s8 saturates there.
_ONEDNN_ISAS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE", "AVX512_MIC", "AVX512_MIC_4OPS"}

#: CPU classes an x86 machine can impersonate: the environment that keeps oneDNN and ATen to an older ISA.
#: Set before torch is imported (a subprocess); tests and benchmarks/cpu_classes.py run every class this way.
CPU_CLASS_LIMITS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx512-vnni": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx512-bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512"},
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read: then no path that needs a
    flag is declared exact)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# ----------------------------------------------------------------------------------------------- the paths


@dataclass(frozen=True)
class Int8Path:
    """One way to compute ``fp32(Σ_k a[m, k] · w[n, k])`` exactly for int8 codes.

    Attributes:
        name: the path's name (``VIDQUANT_INT8_PATH``).
        exact_on: the CPUs on which it is exact, and why (shown when it is chosen).
        requirement: None when this machine qualifies, else why not (checked before the self-check).
        prepare: int8 weight codes ``(N, K)`` -> the weight in the kernel's layout (done once per layer).
        matmul: activation codes ``(M, K)`` as fp32 integers, prepared weight -> ``(M, N)`` fp32.
    """

    name: str
    exact_on: str
    requirement: Callable[[], str | None]
    prepare: Callable[[Tensor], Any]
    matmul: Callable[[Tensor, Any], Tensor]


def _onednn_isa_limit() -> str:
    """oneDNN's ISA cap from the environment ("" when unset)."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def _int8_dot_product() -> str | None:
    """None when oneDNN may use an int32-accumulating int8 dot product (VNNI or AMX) here, else why not."""
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_prepack")):
            return "this torch build has no oneDNN quantized linear"
        if torch.ops.mkldnn._is_mkldnn_acl_supported():
            return "oneDNN runs on Arm's ACL here"
    except (AttributeError, RuntimeError) as e:
        return f"oneDNN unavailable ({e})"
    if not any(f in cpu_flags() for f in _VNNI_FLAGS):
        return f"no int8 dot product on this CPU ({' / '.join(_VNNI_FLAGS)} not in /proc/cpuinfo flags)"
    isa = _onednn_isa_limit()
    if isa in _ONEDNN_ISAS_WITHOUT_VNNI:
        return f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN off the int8 dot-product instructions"
    return None


def _onednn_requirement() -> str | None:
    why_not = _int8_dot_product()
    if why_not is None and "amx_int8" in cpu_flags():
        isa = _onednn_isa_limit()
        if isa in ("", "ALL", "DEFAULT") or "AMX" in isa:
            return "AMX-INT8: oneDNN's AMX u8s8 kernel rounds sums past 2^24 to fp32 before the zero-point compensation"
    return why_not


def _onednn_prepare(w: Tensor) -> tuple[Tensor, Tensor]:
    packed = torch.ops.onednn.qlinear_prepack(w.contiguous(), None)
    return packed, torch.ones(w.shape[0])


def _onednn_matmul(codes: Tensor, prepared: tuple[Tensor, Tensor]) -> Tensor:
    packed, ones = prepared  # ones: the per-channel weight scale oneDNN requires; ours come in the epilogue
    u8 = (codes + _U8_ZERO_POINT).to(torch.uint8)
    return torch.ops.onednn.qlinear_pointwise(
        u8, 1.0, _U8_ZERO_POINT, packed, ones, None, None, 1.0, 0, torch.float32, "none", [None], ""
    )


def _fp32_requirement() -> str | None:
    precision = torch.get_float32_matmul_precision()
    if precision != "highest":
        return f"torch.get_float32_matmul_precision() is {precision!r}: fp32 GEMMs may round through bf16/tf32"
    return None


def _fp32_prepare(w: Tensor) -> tuple[Tensor, Tensor]:
    """The codes as fp32, and each input column's largest |code| (for the per-call exactness bound)."""
    wf = w.float()
    return wf, wf.abs().amax(dim=0)


def single_gemm_is_exact(codes: Tensor, col_max: Tensor) -> bool:
    """Whether no partial sum of ``codes @ w.T`` can exceed 2^24 (see :func:`_fp32_matmul`), given each input
    column's largest |weight code|."""
    return float(torch.mv(codes.abs(), col_max).max()) <= _SINGLE_GEMM_BOUND


def _fp32_matmul(codes: Tensor, prepared: tuple[Tensor, Tensor]) -> Tensor:
    """One fp32 GEMM when this call's sums provably never round, else K in chunks of 1024 summed in int32.

    Every partial sum a GEMM can form (any order, blocking or FMA) is a sum of some of the exact integer products
    ``a[m, k] · w[n, k]``, so its magnitude is at most ``Σ_k |a[m, k]| · max_n |w[n, k]|``. When that bound is at
    most 2^24 for every row, no addition rounds and one GEMM is exact. The bound is computed in fp32 (relative
    error below K·2^-24, under 1e-3 for K < 16k), so it is compared with 2^23 to leave room for its own
    rounding. Real activations (most codes far below 127) pass at Wan's widths; the probe's full-range rows
    take the chunked branch.
    """
    w, col_max = prepared
    if codes.shape[1] <= FP32_EXACT_CHUNK or single_gemm_is_exact(codes, col_max):
        return codes @ w.t()
    k = codes.shape[1]
    acc = None
    for k0 in range(0, k, FP32_EXACT_CHUNK):
        part = (codes[:, k0:k0 + FP32_EXACT_CHUNK] @ w[:, k0:k0 + FP32_EXACT_CHUNK].t()).to(torch.int32)
        acc = part if acc is None else acc.add_(part)
    return acc.float()


def _int_mm_prepare(w: Tensor) -> Tensor:
    return w.t()


def _int_mm_matmul(codes: Tensor, w_t: Tensor) -> Tensor:
    return torch._int_mm(codes.to(torch.int8), w_t).float()


#: Fastest first (where each is exact).
INT8_PATHS: dict[str, Int8Path] = {
    p.name: p
    for p in (
        Int8Path("onednn-u8s8", "AVX-VNNI / AVX512-VNNI CPUs without AMX (int32 dot products)",
                 _onednn_requirement, _onednn_prepare, _onednn_matmul),
        Int8Path("int-mm", "VNNI / AMX CPUs (int32 dot products)",
                 _int8_dot_product, _int_mm_prepare, _int_mm_matmul),
        Int8Path("fp32-codes", "every CPU with IEEE fp32 GEMMs (no product or 1024-long partial sum rounds)",
                 _fp32_requirement, _fp32_prepare, _fp32_matmul),
    )
}


# ----------------------------------------------------------------------------------------------- the check


def _probe(m: int, n: int, k: int, seed: int, amax: int = 128) -> tuple[Tensor, Tensor]:
    """Full-range codes: random rows plus rows of +127, -127, -128 and alternating signs on both sides, so that
    any 16-bit intermediate saturates and sums cross 2^24. ``amax`` < 128 keeps the random activation rows
    small (the typical case, where a path may take a shortcut); the extreme rows stay."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-amax, amax, (m, k), generator=g, dtype=torch.int16)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int16)
    alternating = torch.tensor([127, -127]).repeat((k + 1) // 2)[:k]
    for rows in (a, w):
        rows[0], rows[1], rows[2] = 127, -127, alternating
    a[3] = -128
    return a.float(), w.to(torch.int8)


def _exact(a: Tensor, w: Tensor) -> Tensor:
    """The reference: int64 products and sums, no GEMM library involved, then one rounding to fp32."""
    return (a.long()[:, None, :] * w.long()[None, :, :]).sum(-1).float()


def self_check(path: Int8Path) -> str | None:
    """Run ``path`` on full-range probes against the exact int64 reference; None if it agrees bit for bit,
    else what differed."""
    for m, n, k, amax in ((5, 3, 40, 128), (21, 19, 2 * FP32_EXACT_CHUNK + 64, 128), (19, 21, 8 * FP32_EXACT_CHUNK, 4)):
        a, w = _probe(m, n, k, seed=k, amax=amax)
        if amax < 128:  # the small rows alone, as real activations mostly are
            a = a[4:]
        try:
            got = path.matmul(a, path.prepare(w))
        except (RuntimeError, NotImplementedError) as e:
            return f"failed on a ({m}, {k}) x ({k}, {n}) probe: {e}"
        ref = _exact(a, w)
        if got.shape != ref.shape or not torch.equal(got, ref):
            err = ((got.double() - ref.double()).norm() / ref.double().norm()).item()
            return f"disagrees with the exact int32 result on a ({m}, {k}) x ({k}, {n}) probe (rel. L2 {err:.3g})"
    return None


def eligibility(path: Int8Path) -> str | None:
    """None if ``path`` is declared exact on this machine and passes the self-check, else why not."""
    return path.requirement() or self_check(path)


@functools.cache
def _choose(forced: str | None) -> Int8Path:
    if forced is not None:
        if forced not in INT8_PATHS:
            raise ValueError(f"VIDQUANT_INT8_PATH={forced!r}: expected one of {', '.join(INT8_PATHS)}")
        path = INT8_PATHS[forced]
        why_not = eligibility(path)
        if why_not:
            raise RuntimeError(f"int8 GEMM path {forced} (forced) refused on this CPU: {why_not}")
        log.info("int8 GEMM: %s (forced; exact on %s; self-check passed)", forced, path.exact_on)
        return path
    skipped = []
    for path in INT8_PATHS.values():
        why_not = path.requirement()
        if why_not is None:
            why_not = self_check(path)
            if why_not is not None:
                log.warning("int8 GEMM path %s refused: %s", path.name, why_not)
        if why_not is None:
            reason = f"; skipped {'; '.join(skipped)}" if skipped else ""
            log.info("int8 GEMM: %s (exact on %s; self-check passed%s)", path.name, path.exact_on, reason)
            return path
        skipped.append(f"{path.name}: {why_not}")
    raise RuntimeError("no exact int8 GEMM on this CPU: " + "; ".join(skipped))


def int8_path() -> Int8Path:
    """The int8 GEMM W8A8Linear uses on the CPU: the fastest path that is exact here (chosen and self-checked
    once per process; ``VIDQUANT_INT8_PATH`` forces one)."""
    return _choose(os.environ.get("VIDQUANT_INT8_PATH") or None)


@contextlib.contextmanager
def use_int8_path(name: str) -> Iterator[Int8Path]:
    """Force a path inside the ``with`` block (self-checked; raises if it is not exact here)."""
    old = os.environ.get("VIDQUANT_INT8_PATH")
    os.environ["VIDQUANT_INT8_PATH"] = name
    try:
        yield int8_path()
    finally:
        if old is None:
            del os.environ["VIDQUANT_INT8_PATH"]
        else:
            os.environ["VIDQUANT_INT8_PATH"] = old
