"""The W8A8 int8 runtime per CPU class: which int8 GEMM path each class runs, how fast it is against fp32 and
bf16, and each path's error against the exact int32 result (including the paths that are refused there).

Every class of ``vidquant.quant.int8_gemm.CPU_CLASS_LIMITS`` runs in its own interpreter with oneDNN's and
ATen's ISA limited (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``), so one modern x86 machine measures how
an AVX2-only or an AVX-512-without-VNNI CPU behaves. An ISA-limited run is an emulation of that class on this
machine's cores (caches, clocks and core count are this machine's), so its speed ratios are indicative; its
errors are exact.

    python benchmarks/cpu_classes.py            # writes results/benchmarks/cpu_classes.{csv,md}

Per class and path: ``eligible`` (declared exact here and self-checked), the path's error on a Wan-shaped
problem with real-looking codes against the exact int64 result (relative L2 and the fraction of wrong sums),
and, for the paths that run, GEMM-only time. Per class: the W8A8 linear the runtime uses (act quant + chosen
path + epilogue) against fp32 and bf16 ``F.linear`` at the Wan2.1-1.3B shapes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, log, machine_info, md_table, run_in_subprocess, write_csv, write_md  # noqa: E402

#: (layer, K, N) at Wan2.1-1.3B width; M tokens per call.
SHAPES = (("qkvo", 1536, 1536), ("ffn_down", 8960, 1536))
TOKENS = 1024


def measure(shapes=SHAPES, tokens: int = TOKENS, repeats: int = 5) -> dict:
    """In the (ISA-limited) child: every path's error and speed, and the runtime's linear against fp32/bf16."""
    import torch

    with torch.no_grad():
        rows = [r for layer, k, n in shapes for r in _measure_shape(layer, k, n, tokens, repeats)]
    return {"rows": rows, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _measure_shape(layer: str, k: int, n: int, tokens: int, repeats: int) -> list[dict]:
    import torch
    import torch.nn.functional as F
    from common import time_interleaved

    from vidquant.quant import W8A8Linear
    from vidquant.quant.int8_gemm import INT8_PATHS, int8_path, self_check

    gen = torch.Generator().manual_seed(k + n)
    lin = torch.nn.Linear(k, n)
    lin.weight.copy_(torch.randn(n, k, generator=gen) / k**0.5)
    x = torch.randn(tokens, k, generator=gen).bfloat16()
    w8 = W8A8Linear.from_linear(lin, "int8")
    w8c = W8A8Linear.from_quantized(w8.weight, w8.weight_scale, None, "int8")
    w8c.compiled = True  # what the runtime runs at Wan widths (fused act quant + epilogue)
    codes = torch.clamp(torch.round(x.float() / (x.float().abs().amax(-1, keepdim=True) / 127)), -128, 127)
    exact = (codes.double() @ w8.weight.double().T).float()
    w32, w16, x32 = lin.weight.detach(), lin.weight.detach().bfloat16(), x.float()
    w8.bias = None
    fns = {"fp32": lambda: F.linear(x32, w32), "bf16": lambda: F.linear(x, w16), "w8a8_eager": lambda: w8(x),
           "w8a8": lambda: w8c(x)}
    rows = []
    for name, path in INT8_PATHS.items():
        why_not = path.requirement()
        try:
            prepared = path.prepare(w8.weight)
            got = path.matmul(codes, prepared)
        except (RuntimeError, NotImplementedError) as e:
            rows.append({"path": name, "eligible": False, "why_not": why_not or f"fails: {e}"})
            continue
        why_not = why_not or self_check(path)
        rows.append({"path": name, "eligible": why_not is None, "why_not": why_not or "",
                     "rel_err_vs_exact": float((got.double() - exact.double()).norm() / exact.double().norm()),
                     "wrong_sums": float((got != exact).float().mean())})
        fns[f"gemm_{name}"] = (lambda p, pw: lambda: p.matmul(codes, pw))(path, prepared)
    t = time_interleaved(fns, warmup=1, repeats=repeats)
    chosen = int8_path().name
    for r in rows:
        r.update(layer=layer, tokens=tokens, K=k, N=n, chosen=r["path"] == chosen)
        if f"gemm_{r['path']}" in t:
            r["gemm_ms"] = round(t[f"gemm_{r['path']}"].median_ms, 2)
            r["gemm_speedup_vs_fp32"] = round(t["fp32"].median_ms / r["gemm_ms"], 3)
        if r["chosen"]:
            r.update(fp32_ms=round(t["fp32"].median_ms, 2), bf16_ms=round(t["bf16"].median_ms, 2),
                     w8a8_eager_ms=round(t["w8a8_eager"].median_ms, 2), w8a8_ms=round(t["w8a8"].median_ms, 2),
                     w8a8_speedup_vs_fp32=round(t["fp32"].median_ms / t["w8a8"].median_ms, 3),
                     w8a8_speedup_vs_bf16=round(t["bf16"].median_ms / t["w8a8"].median_ms, 3))
    return rows


def run(classes: list[str] | None = None, out_dir: Path = RESULTS, shapes=SHAPES, tokens: int = TOKENS,
        repeats: int = 5) -> list[dict]:
    """Measure every CPU class in its own ISA-limited interpreter; write ``cpu_classes.{csv,md}``."""
    from vidquant.quant.int8_gemm import CPU_CLASS_LIMITS

    rows = []
    for label in classes or list(CPU_CLASS_LIMITS):
        env = CPU_CLASS_LIMITS[label]
        res = run_in_subprocess("cpu_classes", "measure", {"shapes": [list(s) for s in shapes], "tokens": tokens,
                                                           "repeats": repeats}, env=env)
        for r in res["rows"]:
            rows.append({"cpu_class": label, "aten": res["cpu_capability"],
                         "onednn_isa": env.get("ONEDNN_MAX_CPU_ISA", "native"), **r})
        log(f"cpu_classes {label}: chosen {next(r['path'] for r in res['rows'] if r['chosen'])}")
    info = machine_info()
    write_csv(rows, out_dir / "cpu_classes.csv", info)
    paths_cols = ["cpu_class", "layer", "path", "eligible", "chosen", "rel_err_vs_exact", "wrong_sums", "gemm_ms",
                  "gemm_speedup_vs_fp32", "why_not"]
    runtime_cols = ["cpu_class", "aten", "onednn_isa", "layer", "tokens", "path", "fp32_ms", "bf16_ms",
                    "w8a8_eager_ms", "w8a8_ms", "w8a8_speedup_vs_fp32", "w8a8_speedup_vs_bf16"]
    note = (f"Each class runs in its own interpreter with the ISA limited (`ONEDNN_MAX_CPU_ISA`, "
            f"`ATEN_CPU_CAPABILITY`) on this machine: speeds are indicative of that class (same cores, caches "
            f"and clocks), errors are exact. M = {tokens} tokens, Wan2.1-1.3B shapes, "
            f"{info['torch_threads']} thread(s), no bias. `w8a8` = the runtime's W8A8Linear at Wan widths: per-token "
            "act quant + the chosen exact path + epilogue, the act quant and epilogue fused by torch.compile; "
            "`w8a8_eager` = the same unfused (the tiny models' setting); bf16 in and out.\n")
    chosen = [r for r in rows if r["chosen"]]
    write_md(out_dir / "cpu_classes.md", "W8A8 int8 runtime per CPU class", info, [
        ("The runtime per class", note + "\n" + md_table(chosen, runtime_cols)),
        ("Every int8 path per class: error against the exact int32 result, GEMM-only speed",
         "A path runs only where it is eligible (declared exact on the class and self-checked); the others are "
         "measured to show why they are refused.\n\n" + md_table(rows, paths_cols)),
    ])
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", nargs="*", default=None)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    run(args.classes, repeats=args.repeats)
