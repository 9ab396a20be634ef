"""``make bench``: every benchmark, one after the other, written to results/benchmarks/ (csv + md each).

    python benchmarks/run_all.py                 # the CPU run (< 20 minutes on 2 cores)
    python benchmarks/run_all.py --only gemm     # one stage
    python benchmarks/run_all.py --quick         # toy sizes, a minute (what the smoke test runs)
    python benchmarks/run_all.py --device cuda   # GEMM and block tables on a GPU (gemm_cuda.*, block_cuda.*)

Stages: ``gemm`` (W8A8 vs bf16/fp32 GEMMs), ``cpu_classes`` (the int8 paths and the W8A8 linear on every CPU
class this machine can impersonate, ISA-limited subprocesses), ``block`` (one Wan-1.3B block, the tiny and the
1.3B-shaped denoiser step), ``calibration`` (RTN/SmoothQuant/AWQ/GPTQ time and peak RSS, in memory vs
streamed, at 8/16/30 blocks; AWQ and GPTQ on 8 blocks unless ``--full-calibration``), ``size`` (int8/fp8
export size vs bf16).
``wan14b`` (not in the default run: a Wan-14B-shaped checkpoint, 28.6 GB, quantized by streaming on a
machine with less RAM than that) runs with ``--only wan14b``. ``summary.md`` records what ran and how long
it took; ``figures.py`` draws gemm_speedup.png and calibration_memory.png from the tables.
"""

from __future__ import annotations

import os

# PyTorch's CPU allocator reads this once, before the first allocation: large tensors then come from 2 MiB
# transparent huge pages instead of 4 KiB pages, which cuts the page-fault cost of every freshly allocated
# activation (it dominates eager ops on VMs). Applied to every variant alike, recorded in each result file.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, log, machine_info, machine_line, md_table  # noqa: E402

STAGES = ("gemm", "cpu_classes", "block", "calibration", "size")
EXTRA_STAGES = ("wan14b",)  # on request only (--only wan14b): ~45 GB of disk and ~20 minutes
QUICK = {
    "gemm": {"tokens": [32, 64], "models": ["toy"]},
    "block": {"block_tokens": [16], "step_tokens": 16, "repeats": 1},
    "cpu_classes": {"shapes": [("toy", 64, 32)], "tokens": 16, "repeats": 1, "classes": ["native", "avx2"],
                    "clip": None},
    "calibration": {"depths": [1, 2], "methods": ["RTN", "SmoothQuant"]},
}
TOY_WIDTH = {"num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 128, "text_dim": 32}


def apply_quick() -> None:
    """Shrink every benchmark's model to toy sizes (for the smoke test and for trying the pipeline)."""
    import block
    import calibration
    import gemm

    from vidquant.models.tiny import TEST_SIZES

    gemm.SHAPES["toy"] = (("qkvo", 64, 64), ("ffn_up", 64, 128))
    block.DIM, block.FFN, block.HEADS, block.HEAD_DIM, block.TEXT_LEN = 64, 128, 2, 32, 8
    block.TINY_DIR, block.TINY_SIZES = Path("/nonexistent/tiny-wan-t2v"), TEST_SIZES
    calibration.WAN13B.update(TOY_WIDTH)


def run_stage(name: str, args: argparse.Namespace, state: dict) -> None:
    """Run one stage with the sizes of the full or the quick run."""
    out, quick = Path(args.out), args.quick
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"  # gemm_cuda.md beside gemm.md
    if name == "gemm":
        import gemm

        kw = QUICK["gemm"] if quick else {}
        gemm.run(args.device, out_dir=out, suffix=suffix, **kw)
    elif name == "block":
        import block

        kw = QUICK["block"] if quick else {}
        block.run(out_dir=out, wan13b_layers=2 if quick else 30, device=args.device, suffix=suffix, **kw)
    elif name == "cpu_classes":
        import cpu_classes

        cpu_classes.run(out_dir=out, **(QUICK["cpu_classes"] if quick else {}))
    elif name == "calibration":
        import calibration

        kw = QUICK["calibration"] if quick else {}
        if not quick and not args.full_calibration:
            kw["short_methods"] = {"Awq": 8, "GPTQ": 8}  # 3 + 7.5 minutes per mode on 30 blocks: see calibration.py
        width = TOY_WIDTH if quick else None
        shape = {"height": 8, "width": 8, "text_len": 8} if quick else None
        calibration.run(out_dir=out, width=width, shape=shape, keep_checkpoint=state, **kw)
    elif name == "wan14b":
        import wan14b

        kw = {"cfg": {**TOY_WIDTH, "num_layers": 2}, "shape": {"height": 8, "width": 8, "text_len": 8}} if quick else {}
        wan14b.run(out_dir=out, **kw)
    elif name == "size":
        import size

        size.run(state.get("checkpoint"), out_dir=out)
        state.pop("cleanup", lambda: None)()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=STAGES + EXTRA_STAGES, default=list(STAGES))
    p.add_argument("--quick", action="store_true", help="toy sizes (about a minute)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GEMM and block stages on a GPU")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--full-calibration", action="store_true",
                   help="AWQ and GPTQ on all 30 blocks too (adds about 15 minutes on 2 cores)")
    args = p.parse_args(argv)
    if args.quick:
        apply_quick()
    stages = [s for s in args.only if args.device == "cpu" or s in ("gemm", "block")]
    info = machine_info(args.device)
    log(f"make bench: {', '.join(stages)} -> {args.out}\n  {machine_line(info)}")
    state: dict = {}
    timings = []
    start = time.perf_counter()
    try:
        for name in stages:
            t0 = time.perf_counter()
            log(f"== {name}")
            run_stage(name, args, state)
            timings.append({"stage": name, "seconds": round(time.perf_counter() - t0, 1)})
            log(f"== {name} done in {timings[-1]['seconds']:.0f} s (total {time.perf_counter() - start:.0f} s)")
    finally:
        state.pop("cleanup", lambda: None)()
    import figures

    for path in figures.run(Path(args.out)):
        log(f"figure: {path}")
    total = time.perf_counter() - start
    timings.append({"stage": "total", "seconds": round(total, 1)})
    if not args.quick and args.device == "cpu" and set(stages) == set(STAGES):
        _write_summary(Path(args.out), info, timings)
    log(f"make bench finished in {total / 60:.1f} min")
    return 0


def _write_summary(out: Path, info: dict, timings: list[dict]) -> None:
    text = (f"# make bench\n\nMachine: {machine_line(info)}\n\n"
            f"Wall time per stage (the whole run must stay under 20 minutes on 2 cores):\n\n{md_table(timings)}\n"
            "Analysis: README.md. Tables: gemm.md, cpu_classes.md, block.md, calibration.md, size.md (csv beside "
            "each). Figures: gemm_speedup.png, calibration_memory.png.\n")
    (out / "summary.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
