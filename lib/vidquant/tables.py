"""The methods × formats results table on the tiny models (`make tables`, `vidquant tables`).

Each cell is one `vidquant.run.quantize` run of the shipped tiny config with the method and format swapped in
by overrides, so every number comes from the same code path as `vidquant quantize`:

    vidquant tables --task t2v            # → results/tables/methods_formats_t2v.{csv,md}
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from vidquant.config import load_config
from vidquant.run import quantize

FORMATS: dict[str, dict] = {
    "W8A8-int8": {"weight": {"bit": 8, "symmetric": True, "granularity": "per_channel"},
                  "act": {"bit": 8, "symmetric": True, "granularity": "per_token"}},
    "FP8-e4m3": {"weight": {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_channel",
                            "use_qtorch": True},
                 "act": {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_token", "use_qtorch": True}},
    "W6A6": {"weight": {"bit": 6, "symmetric": True, "granularity": "per_channel"},
             "act": {"bit": 6, "symmetric": True, "granularity": "per_token"}},
    "W4A8": {"weight": {"bit": 4, "symmetric": True, "granularity": "per_channel"},
             "act": {"bit": 8, "symmetric": True, "granularity": "per_token"}},
}
# The formats lightx2v runs beyond W8A8 (docs/formats.md §5), exported in its layout; act None = weight-only.
_MX = {"quant_type": "mx-quant", "granularity": "per_block", "block_size": 32}
_NV = {"quant_type": "nvfp4-quant", "bit": "e2m1", "granularity": "per_block", "block_size": 16}
_FP8T = {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_tensor"}
BLOCK_FORMATS: dict[str, dict] = {
    "MXFP8": {"weight": {**_MX, "bit": "e4m3"}, "act": {**_MX, "bit": "e4m3"}},
    "MXFP6-MXFP8": {"weight": {**_MX, "bit": "e3m2"}, "act": {**_MX, "bit": "e4m3"}},
    "MXFP4": {"weight": {**_MX, "bit": "e2m1"}, "act": {**_MX, "bit": "e2m1"}},
    "NVFP4": {"weight": _NV, "act": _NV},
    "W4A16-g128": {"weight": {"bit": 4, "symmetric": True, "granularity": "per_group", "group_size": 128},
                   "act": None},
    "FP8-pertensor": {"weight": _FP8T, "act": {**_FP8T, "static": True}},
}
FORMATS.update(BLOCK_FORMATS)
EXPORTED = {"W8A8-int8", "FP8-e4m3", *BLOCK_FORMATS}
METHODS: dict[str, list[str]] = {
    "RTN": ["RTN"],
    "SmoothQuant": ["SmoothQuant"],
    "AWQ": ["Awq"],
    "GPTQ": ["GPTQ"],
    "SQ+GPTQ": ["SmoothQuant", "GPTQ"],
}
SPECIAL = {"SmoothQuant": {"alpha": 0.75}, "Awq": {}, "GPTQ": {}, "RTN": {}}
COLUMNS = ["method", "format", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_psnr", "video_ssim",
           "video_flicker_error", "video_colour_ok", "video_direction_ok", "video_float_colour_ok",
           "video_float_direction_ok", "seconds"]


def run_cell(task: str, method: str, fmt: str, out_root: Path, model_path: str | None = None) -> dict:
    """One (method, format) run of configs/quantization/video_gen/tiny_<task>/rtn_w_a.yaml with overrides."""
    summary = quantize(cell_config(task, method, fmt, out_root, model_path), progress=False).summary
    return {**summary, "method": method, "format": fmt}


def cell_config(task: str, method: str, fmt: str, out_root: Path, model_path: str | None = None):
    """The config of one cell: the shipped tiny RTN config with the method, format and paths swapped in."""
    chain = METHODS[method]
    special = {k: v for m in chain for k, v in SPECIAL[m].items()}
    if "GPTQ" in chain and fmt in BLOCK_FORMATS:
        special["static_groups"] = True  # block grids fixed up front (actorder needs it; nvfp4 always)
    run_dir = out_root / task / f"{method}_{fmt}".replace("+", "_")
    overrides = {
        "quant.video_gen.method": chain if len(chain) > 1 else chain[0],
        "quant.video_gen.weight": FORMATS[fmt]["weight"],
        "quant.video_gen.act": FORMATS[fmt]["act"],
        "quant.video_gen.special": special,
        "save.save_path": str(run_dir),
        # only what lightx2v can run is exported; W6A6 / W4A8 are simulated (fake-quant) only
        "save.save_lightx2v": fmt in EXPORTED,
        "eval.output_video_path": str(run_dir / "videos"),
    }
    if model_path:
        overrides["model.path"] = model_path
    return load_config(f"configs/quantization/video_gen/tiny_{task}/rtn_w_a.yaml", overrides)


def build_table(task: str, out_root: Path, methods=None, formats=None, model_path: str | None = None) -> pd.DataFrame:
    rows = []
    for method in methods or METHODS:
        for fmt in formats or FORMATS:
            print(f"[tables] {task}: {method} × {fmt}", flush=True)
            rows.append(run_cell(task, method, fmt, out_root, model_path))
    df = pd.DataFrame(rows)
    return df[[c for c in COLUMNS if c in df.columns]]


def merge_cells(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with the (method, format) rows of ``new`` replaced or added, in METHODS x FORMATS order."""
    done = set(zip(new["method"], new["format"]))
    keep = old[[(m, f) not in done for m, f in zip(old["method"], old["format"])]]
    df = pd.concat([keep, new], ignore_index=True)
    order = {(m, f): i for i, (m, f) in enumerate((m, f) for m in METHODS for f in FORMATS)}
    df = df.iloc[sorted(range(len(df)), key=lambda i: order.get((df["method"][i], df["format"][i]), len(order)))]
    return df[[c for c in COLUMNS if c in df.columns]].reset_index(drop=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vidquant tables", description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["t2v", "i2v"], default="t2v")
    p.add_argument("--methods", nargs="*", choices=list(METHODS))
    p.add_argument("--formats", nargs="*", choices=list(FORMATS))
    p.add_argument("--model-path")
    p.add_argument("--out", default="results/tables")
    p.add_argument("--runs", default="results/runs/tables")
    args = p.parse_args(argv)
    df = build_table(args.task, Path(args.runs), args.methods, args.formats, args.model_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"methods_formats_{args.task}"
    if (args.methods or args.formats) and Path(f"{stem}.csv").is_file():
        df = merge_cells(pd.read_csv(f"{stem}.csv"), df)  # a subset updates its cells, keeps the others
    df.to_csv(f"{stem}.csv", index=False)
    command = "vidquant tables --task " + args.task
    md = (f"# Methods × formats on the tiny {args.task.upper()} model\n\nGenerated by `{command}` "
          "(each row is one `vidquant quantize` run; see lib/vidquant/tables.py).\nSQNR: per-layer output SQNR on the "
          "calibration data (dB, higher is better); timestep error: teacher-forced relative error of the denoiser "
          "prediction; video metrics: against the float model at the same seed; colour/direction: task accuracy of "
          "the quantized model's clips. A run with `--methods` / `--formats` updates only its cells, so rows may come "
          "from different runs; `seconds` is the wall time of each cell on the machine that ran it.\n\n"
          + df.to_markdown(index=False, floatfmt=".4g") + "\n")
    Path(f"{stem}.md").write_text(md)
    print(f"wrote {stem}.csv and .md")
    return 0
