"""GEMM benchmark: W8A8 int8 / fp8 linears (activation quantization included) against bf16 and fp32, at the
linear shapes of Wan2.1-1.3B (dim 1536, ffn 8960) and Wan2.1-14B (dim 5120, ffn 13824).

Every row times all its variants round-robin in one process (``common.time_interleaved``), so the speed-ups
over bf16 are like-for-like. On the CPU the largest sizes are capped by a FLOP budget per call (the whole
``make bench`` must fit 20 minutes on 2 cores); capped cells are empty and the cap is written in the table.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from common import RESULTS, log, machine_info, md_table, time_interleaved, write_csv, write_md

from vidquant.quant.int8_gemm import INT8_PATHS, eligibility, int8_path
from vidquant.quant.linear import W8A8Linear, _act_codes, quantize_act_per_token

#: model -> (layer, in_features K, out_features N); qkvo also stands for the cross-attention q/o.
SHAPES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "wan2.1-1.3b": (("qkvo", 1536, 1536), ("ffn_up", 1536, 8960), ("ffn_down", 8960, 1536)),
    "wan2.1-14b": (("qkvo", 5120, 5120), ("ffn_up", 5120, 13824), ("ffn_down", 13824, 5120)),
}
TOKENS = (256, 1024, 4096, 16384, 32768)
# CPU caps, in GFLOP (2·M·K·N) per call: fp32 is ~3x and emulated fp8 ~20x slower than bf16 there.
CPU_CAP_GFLOP = {"default": 160.0, "fp32": 40.0, "w8a8_fp8": 4.0}
VARIANT_LABELS = {
    "fp32": "fp32 F.linear",
    "bf16": "bf16 F.linear",
    "bf16_packed": "bf16, oneDNN pre-packed weight (CPUs with AVX512-BW only)",
    **{f"int8_gemm_{name}": f"int8 GEMM only, path {name} (codes given; exact on {p.exact_on})"
       for name, p in INT8_PATHS.items()},
    "w8a8_int8": "W8A8Linear int8: what the runtime runs (per-token act quant + the CPU's exact int8 path)",
    "w8a8_int8_compiled": "W8A8Linear int8, torch.compile",
    "fp8_gemm": "fp8 GEMM only (_scaled_mm, codes given)",
    "w8a8_fp8_eager": "W8A8Linear fp8 (eager)",
    "w8a8_fp8_compiled": "W8A8Linear fp8, torch.compile",
}


@dataclass
class Case:
    """One GEMM problem: x (M, K) @ W (N, K)^T."""

    model: str
    layer: str
    m: int
    k: int
    n: int

    @property
    def gflop(self) -> float:
        return 2.0 * self.m * self.k * self.n / 1e9


def cases(tokens: Iterable[int], models: Iterable[str] | None = None) -> list[Case]:
    """Every (model, layer, token count) combination, grouped by weight shape (all models by default)."""
    models = tuple(SHAPES) if models is None else models
    return [Case(model, layer, m, k, n) for model in models for layer, k, n in SHAPES[model] for m in tokens]


def allowed(variant: str, case: Case, device: str) -> bool:
    """Whether a variant runs at this size (CPU FLOP caps; fp8 GEMMs on CUDA need sm89+)."""
    if device == "cpu":
        cap = CPU_CAP_GFLOP.get(variant, CPU_CAP_GFLOP["default"])
        if variant.startswith("fp8") or variant.startswith("w8a8_fp8"):
            cap = CPU_CAP_GFLOP["w8a8_fp8"]
        return case.gflop <= cap and not variant.endswith("_compiled")
    if variant == "bf16_packed" or variant.startswith("int8_gemm_"):
        return False
    if "fp8" in variant:
        return torch.cuda.get_device_capability() >= (8, 9)
    return True


class Weights:
    """One weight shape's tensors and modules, built once and shared by every token count."""

    def __init__(self, k: int, n: int, device: str, compile_ok: bool) -> None:
        gen = torch.Generator(device="cpu").manual_seed(k * 7 + n)
        lin = torch.nn.Linear(k, n)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n, k, generator=gen) / k**0.5)
            lin.bias.copy_(torch.randn(n, generator=gen) * 0.01)
        self.w32, self.b32 = lin.weight.detach().to(device), lin.bias.detach().to(device)
        self.w16, self.b16 = self.w32.bfloat16(), self.b32.bfloat16()
        lin16 = lin.to(device=device, dtype=torch.bfloat16)
        self.int8 = W8A8Linear.from_linear(lin16, "int8")
        self.int8.compiled = True  # what the runtime runs at Wan widths: fused act quant + epilogue (CPU)
        self.fp8 = W8A8Linear.from_linear(lin16, "fp8")
        # every int8 path that is exact on this CPU, its weight prepared once (CPU only: CUDA uses _int_mm)
        self.paths = {} if device != "cpu" else {
            name: (p, p.prepare(self.int8.weight)) for name, p in INT8_PATHS.items() if eligibility(p) is None}
        self.packed_m: int | None = None
        self.packed16: torch.Tensor | None = None
        self.compiled: dict[str, Callable] = {}
        if compile_ok and device != "cpu":
            self.compiled = {"int8": torch.compile(self.int8, dynamic=True),
                             "fp8": torch.compile(self.fp8, dynamic=True)}

    def bf16_packed(self, m: int) -> torch.Tensor:
        """The bf16 weight in oneDNN's blocked layout (the layout hint depends on the batch size)."""
        if self.packed_m != m:
            self.packed16 = torch.ops.mkldnn._reorder_linear_weight(self.w16, m)
            self.packed_m = m
        return self.packed16


def variant_fns(w: Weights, case: Case, device: str) -> dict[str, Callable[[], object]]:
    """The callables to time for one case (inputs drawn once, reused by every repeat)."""
    gen = torch.Generator(device="cpu").manual_seed(case.m)
    x32 = torch.randn(case.m, case.k, generator=gen).to(device)
    x16 = x32.bfloat16()
    codes, _ = _act_codes(x16, "int8", "vidquant")
    fns: dict[str, Callable[[], object]] = {
        "fp32": lambda: F.linear(x32, w.w32, w.b32),
        "bf16": lambda: F.linear(x16, w.w16, w.b16),
        "w8a8_int8": lambda: w.int8(x16),
        "w8a8_fp8_eager": lambda: w.fp8(x16),
    }
    for name, (path, prepared) in w.paths.items():
        fns[f"int8_gemm_{name}"] = (lambda p, pw: lambda: p.matmul(codes, pw))(path, prepared)
    if device == "cpu" and bf16_prepack_unsupported() is None:
        packed16 = w.bf16_packed(case.m)
        fns["bf16_packed"] = lambda: torch.ops.mkldnn._linear_pointwise(x16, packed16, w.b16, "none", [], "")
    if device != "cpu":
        f8, s8 = quantize_act_per_token(x16, "fp8")
        wt_f8, sw = w.fp8.weight.t(), w.fp8.weight_scale.t().contiguous()
        fns["fp8_gemm"] = lambda: torch._scaled_mm(f8, wt_f8, scale_a=s8, scale_b=sw, out_dtype=torch.bfloat16)
        for fmt, fn in w.compiled.items():
            fns[f"w8a8_{fmt}_compiled"] = (lambda f: lambda: f(x16))(fn)
    return {k: v for k, v in fns.items() if allowed(k, case, device)}


@functools.cache
def bf16_prepack_unsupported() -> str | None:
    """None if oneDNN can pre-pack a bf16 linear weight on this CPU, else its reason (it needs AVX512-BW)."""
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 4)
    except (RuntimeError, AttributeError) as e:
        return str(e).splitlines()[0][:160]
    return None


def accuracy(w: Weights, case: Case, device: str) -> dict[str, float]:
    """Relative error of the int8 output against fp32 at this size, and whether every exact int8 path gives the
    runtime's bits (they must: each is exact)."""
    gen = torch.Generator(device="cpu").manual_seed(case.m + 1)
    x = torch.randn(min(case.m, 256), case.k, generator=gen).to(device)
    ref = F.linear(x, w.w32, w.b32)
    out = {"int8_rel_err": _rel(w.int8(x.bfloat16()), ref)}
    if w.paths:
        codes, _ = _act_codes(x.bfloat16(), "int8", "vidquant")
        accs = [p.matmul(codes, pw) for p, pw in w.paths.values()]
        out["int8_paths_identical"] = float(all(torch.equal(a, accs[0]) for a in accs))
    return out


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref).norm() / ref.norm())


def run(device: str = "cpu", tokens: Iterable[int] = TOKENS, models: Iterable[str] | None = None,
        repeats: int = 3, warmup: int = 1, out_dir=RESULTS, suffix: str = "", compile_ok: bool = True) -> list[dict]:
    """Time every case; write ``gemm{suffix}.csv`` and ``.md``; return the rows."""
    info = machine_info(device)
    rows: list[dict] = []
    weights: Weights | None = None
    shape = None
    all_cases = cases(tokens, models)
    with torch.no_grad():
        for i, case in enumerate(all_cases):
            if (case.k, case.n) != shape:
                weights, shape = None, (case.k, case.n)
                weights = Weights(case.k, case.n, device, compile_ok)
            fns = variant_fns(weights, case, device)
            if len(fns) <= 1:
                continue
            timings = time_interleaved(fns, warmup=warmup, repeats=repeats, device=device)
            row = _row(case, timings)
            if case.m == min(tokens):
                row.update(accuracy(weights, case, device))
            rows.append(row)
            log(f"gemm {i + 1}/{len(all_cases)} {case.model} {case.layer} M={case.m}: "
                + ", ".join(f"{k} {v.median_ms:.1f} ms" for k, v in timings.items()))
    write_csv(rows, out_dir / f"gemm{suffix}.csv", info)
    write_md(out_dir / f"gemm{suffix}.md", "GEMM: W8A8 vs bf16 / fp32", info, _md_sections(rows, device))
    return rows


def _row(case: Case, timings: dict) -> dict:
    row: dict = {"model": case.model, "layer": case.layer, "tokens": case.m, "K": case.k, "N": case.n,
                 "gflop": round(case.gflop, 2)}
    bf16 = timings["bf16"].median_ms
    for name, t in timings.items():
        row[f"{name}_ms"] = round(t.median_ms, 3)
    for name, t in timings.items():
        row[f"{name}_speedup_vs_bf16"] = round(bf16 / t.median_ms, 3)
    if "w8a8_int8" in timings:  # on CPUs without native bf16 (AVX2) fp32 is the float baseline that matters
        if "fp32" in timings:  # (fp32 is capped at a smaller size on the CPU)
            row["w8a8_int8_speedup_vs_fp32"] = round(timings["fp32"].median_ms / timings["w8a8_int8"].median_ms, 3)
        if "bf16_packed" in timings:
            row["w8a8_int8_speedup_vs_bf16_packed"] = round(timings["bf16_packed"].median_ms
                                                            / timings["w8a8_int8"].median_ms, 3)
    row["repeats"] = min(t.repeats for t in timings.values())
    return row


def _md_sections(rows: list[dict], device: str) -> list[tuple[str, str]]:
    variants = [v for v in VARIANT_LABELS if any(f"{v}_ms" in r for r in rows)]
    cols = ["model", "layer", "tokens", "gflop", "bf16_ms"] + [f"{v}_speedup_vs_bf16" for v in variants if v != "bf16"]
    cols += [c for c in ("w8a8_int8_speedup_vs_fp32", "w8a8_int8_speedup_vs_bf16_packed")
             if any(c in r for r in rows)]
    legend = "\n".join(f"- `{v}`: {VARIANT_LABELS[v]}" for v in variants)
    note = ("Speed-up = bf16 time / variant time (>1: faster than bf16). Times are medians of round-robin "
            "repeats; every quantized variant includes the per-token activation quantization unless it says "
            "'GEMM only'.\n")
    if device == "cpu":
        caps = ", ".join(f"{k} ≤ {v:g}" for k, v in CPU_CAP_GFLOP.items())
        note += (f"\nCPU caps (GFLOP per call, 2·M·K·N): {caps}; larger cells are '-' (not run), token counts "
                 "with nothing left to compare are left out. fp8 on this CPU is emulated by torch.\n"
                 f"\nint8 path the runtime chose on this CPU: **{int8_path().name}** (exact on {int8_path().exact_on})."
                 " `int8_gemm_*` columns: every path that is exact here (the others are refused; see "
                 "cpu_classes.md).\n")
        if bf16_prepack_unsupported():
            note += f"\n`bf16_packed` not run: {bf16_prepack_unsupported()}\n"
    return [("Speed-up over bf16", note + "\n" + md_table(rows, cols)), ("Variants", legend + "\n")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", type=int, nargs="*", default=list(TOKENS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--suffix", default="")
    args = p.parse_args(argv)
    run(args.device, args.tokens, repeats=args.repeats, suffix=args.suffix)


if __name__ == "__main__":
    main()
