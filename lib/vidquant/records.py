"""What a run records and how results are read back: a notebook's metrics as one flat JSON object (the row the
sweep tables aggregate), and the runs and tables under ``results/`` collected for comparison (notebook 09).

No torch here: the sweep reads records before anything heavy is imported.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from numbers import Number
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["metrics_file", "to_scalar", "flatten_metrics", "record_metrics", "summary_metrics", "read_metrics",
           "collect_runs", "METHOD_COLUMNS", "method_table", "swept_params", "read_tables", "sweep_tables"]


def metrics_file(output_dir: str | os.PathLike, metrics_path: str | os.PathLike | None = None) -> Path:
    """Where a notebook records its metrics: `metrics_path` if given, else ``<output_dir>/metrics.json``."""
    return Path(metrics_path) if metrics_path else Path(output_dir) / "metrics.json"


def to_scalar(value: Any) -> Any:
    """A metric value as JSON takes it: numpy / torch scalars as Python numbers, paths as text, inf / nan as
    "inf" / "nan"; anything else that is not a scalar raises TypeError."""
    if type(value).__module__.split(".")[0] in ("torch", "numpy") and callable(getattr(value, "item", None)):
        try:
            value = value.item()  # a one-element tensor or a numpy scalar (without importing torch here)
        except (ValueError, RuntimeError):
            raise TypeError(f"metric value of shape {tuple(value.shape)} is not a scalar") from None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": JSON has no literal for them
    if value is None or isinstance(value, str | bool | Number):
        return value
    raise TypeError(f"metric value {value!r} ({type(value).__name__}) is not a scalar")


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys (``{"rtn": {"psnr": 1}}`` → ``{"rtn.psnr": 1}``); numpy / torch
    scalars become Python numbers; inf and nan become the strings "inf" / "nan"."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        else:
            flat[name] = to_scalar(value)
    return flat


def record_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> pd.DataFrame:
    """Write a notebook's metrics as one flat JSON object (the row the sweep tables aggregate) and return
    them as a two-column table for display. The file is written under a temporary name and renamed."""
    flat = flatten_metrics(metrics)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".writing")
    tmp.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return pd.DataFrame({"metric": list(flat), "value": list(flat.values())})


def summary_metrics(result) -> dict[str, Any]:
    """A run's headline numbers (`RunResult.summary`) without its machine-specific paths."""
    return {k: v for k, v in result.summary.items() if k not in ("model", "export_dir")}


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a metrics json written by :func:`record_metrics` ("inf"/"nan" back to floats)."""
    data = json.loads(Path(path).read_text())
    return {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in data.items()}


def collect_runs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Every complete run under `runs_dir` (``<notebook>/<run>/metrics.json``, as the sweep and
    ``make notebooks`` write them): one row per run with notebook, run, its parameters and its metrics."""
    rows = []
    for metrics in sorted(Path(runs_dir).glob("*/*/metrics.json")):
        run_dir = metrics.parent
        params_file = run_dir / "params.json"
        params = json.loads(params_file.read_text()) if params_file.is_file() else {}
        rows.append({"notebook": run_dir.parent.name, "run": run_dir.name, **params, **read_metrics(metrics)})
    return pd.DataFrame(rows)


METHOD_COLUMNS = ("label", "notebook", "method", "weight", "act", "mean_sqnr_db", "min_sqnr_db",
                   "mean_timestep_rel_err", "video_psnr", "video_ssim", "video_colour_ok", "video_direction_ok",
                   "seconds")


def method_table(runs: pd.DataFrame, notebooks: str = r"0[2-6]_") -> pd.DataFrame:
    """The method notebooks' default runs (`collect_runs` rows with run ``defaults`` whose notebook matches the
    regex), with their headline columns and a `label` ("03_smoothquant: SmoothQuant int8/int8")."""
    if runs.empty or "run" not in runs:
        return pd.DataFrame(columns=list(METHOD_COLUMNS))
    df = runs[(runs["run"] == "defaults") & runs["notebook"].str.match(notebooks)].copy()
    if df.empty:
        return pd.DataFrame(columns=list(METHOD_COLUMNS))
    df["label"] = df["notebook"] + ": " + df["method"].astype(str) + " " + df["weight"].astype(str) + "/" + \
        df["act"].astype(str)
    return df[[c for c in METHOD_COLUMNS if c in df]].reset_index(drop=True)


def swept_params(table: pd.DataFrame) -> list[str]:
    """The parameters of a sweep table, read from its run slugs (``alpha-0.75__w_bit-4`` → alpha, w_bit)."""
    names: list[str] = []
    for run in table.get("run", pd.Series(dtype=str)).astype(str):
        for part in run.split("__"):
            name = part.split("-", 1)[0]
            if "-" in part and name in table and name not in names:
                names.append(name)
    return names


def read_tables(tables_dir: str | os.PathLike, pattern: str = "*.csv") -> dict[str, pd.DataFrame]:
    """The csv tables in `tables_dir` matching `pattern`, by file stem (sorted)."""
    return {p.stem: pd.read_csv(p) for p in sorted(Path(tables_dir).glob(pattern))}


def sweep_tables(tables_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The sweep tables (``<tables_dir>/<notebook>.csv``, e.g. ``03_smoothquant.csv``) by notebook name."""
    return read_tables(tables_dir, "[0-9][0-9]_*.csv")
