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


#: The demo's clip: tiny I2V, 64 x 64, 9 frames, CFG 5.0, 20 steps, fp32 (what `make demo` generates).
CLIP = {"height": 64, "width": 64, "frames": 9, "guidance": 5.0, "steps": 20}
TINY_I2V = Path(__file__).resolve().parents[1] / "assets" / "models" / "tiny-wan-i2v"


def measure_clip(export: str, clip: dict = CLIP, repeats: int = 2) -> dict:
    """In the (ISA-limited) child: one clip of the float tiny I2V pipeline against the W8A8 runtime of an RTN
    int8 export (as `vidquant infer` loads it: lightx2v numerics, K/V cache on) and without the K/V cache;
    the best of ``repeats`` round-robin runs each."""
    import time

    import torch

    from vidquant.calib.samples import Sample
    from vidquant.generate import GenParams, generate_video
    from vidquant.models.loading import load_pipeline
    from vidquant.runtime import load_quantized_pipeline

    kw = {"numerics": "lightx2v", "round_scale_bf16": True}
    pipes = {"float": load_pipeline(TINY_I2V, None, torch.float32, "cpu"),
             "w8a8": load_quantized_pipeline(TINY_I2V, export, "cpu", torch.float32, **kw),
             "w8a8_uncached": load_quantized_pipeline(TINY_I2V, export, "cpu", torch.float32,
                                                      cache_conditioning=False, **kw)}
    sample = Sample("a red square moving left", "", TINY_I2V.parents[2] / "assets/eval/tiny_i2v/frame_00.png")
    params = GenParams(clip["height"], clip["width"], clip["frames"], clip["guidance"], clip["steps"], 42, 512)
    best = {k: float("inf") for k in pipes}
    for _ in range(repeats):
        for name, pipe in pipes.items():
            t0 = time.perf_counter()
            generate_video(pipe, sample, params)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {f"clip_{k}_s": round(v, 2) for k, v in best.items()}


def _tiny_export(work: Path) -> Path:
    """An RTN int8 lightx2v export of the shipped tiny I2V transformer."""
    import torch

    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.models.loading import load_pipeline
    from vidquant.quant import IntQuantizer

    pipe = load_pipeline(TINY_I2V, None, torch.float32, "cpu")
    return export_lightx2v(pipe.transformer, IntQuantizer(8, True, "per_channel"), work)


def run(classes: list[str] | None = None, out_dir: Path = RESULTS, shapes=SHAPES, tokens: int = TOKENS,
        repeats: int = 5, clip: dict | None = CLIP) -> list[dict]:
    """Measure every CPU class in its own ISA-limited interpreter; write ``cpu_classes.{csv,md}``.

    ``clip``: also time the demo's tiny I2V clip, float vs the W8A8 runtime (None: skip)."""
    import tempfile

    from vidquant.quant.int8_gemm import CPU_CLASS_LIMITS

    rows, clips = [], []
    with tempfile.TemporaryDirectory(prefix="vidquant_cpu_classes_") as tmp:
        export = _tiny_export(Path(tmp)) if clip else None
        for label in classes or list(CPU_CLASS_LIMITS):
            env = CPU_CLASS_LIMITS[label]
            res = run_in_subprocess("cpu_classes", "measure", {"shapes": [list(s) for s in shapes],
                                                               "tokens": tokens, "repeats": repeats}, env=env)
            for r in res["rows"]:
                rows.append({"cpu_class": label, "aten": res["cpu_capability"],
                             "onednn_isa": env.get("ONEDNN_MAX_CPU_ISA", "native"), **r})
            chosen = next(r["path"] for r in res["rows"] if r["chosen"])
            if export is not None:
                c = run_in_subprocess("cpu_classes", "measure_clip", {"export": str(export), "clip": clip}, env=env)
                times = {k: v for k, v in c.items() if k.startswith("clip_")}
                clips.append({"cpu_class": label, "path": chosen, **times,
                              "w8a8_speedup_vs_float": round(c["clip_float_s"] / c["clip_w8a8_s"], 3),
                              "kv_cache_saving": round(1 - c["clip_w8a8_s"] / c["clip_w8a8_uncached_s"], 3)})
            log(f"cpu_classes {label}: chosen {chosen}" + (f", clip {clips[-1]}" if clips else ""))
    info = machine_info()
    write_csv(rows, out_dir / "cpu_classes.csv", info)
    if clips:
        write_csv(clips, out_dir / "cpu_classes_clip.csv", info)
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
    clip_note = "" if not clips else (
        f"\n### The demo's clip\n\nTiny I2V, {clip['height']}x{clip['width']}, {clip['frames']} frames, "
        f"{clip['steps']} steps with CFG, fp32: the float pipeline against the W8A8 runtime of an RTN int8 export "
        "as `vidquant infer` loads it (lightx2v numerics, conditioning K/V cached) and without the K/V cache; "
        "best of 2 round-robin runs, seconds.\n\n" + md_table(clips) + "\n")
    write_md(out_dir / "cpu_classes.md", "W8A8 int8 runtime per CPU class", info, [
        ("The runtime per class", note + "\n" + md_table(chosen, runtime_cols) + clip_note),
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
