"""Sweep tables with intervals: per-clip video metrics of each run → mean [95 % interval], floor, jitter and the
paired difference against a baseline grid point (vidquant.sweep.aggregate)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vidquant.sweep import Run, aggregate, slug


def _run(folder, alpha: float, psnr: np.ndarray, sqnr: float) -> Run:
    params = {"alpha": alpha}
    run_dir = folder / slug(params)
    run_dir.mkdir(parents=True)
    (run_dir / "params.json").write_text(json.dumps(params))
    metrics = {"mean_sqnr_db": sqnr, "mean_timestep_rel_err": 0.01, "video_psnr": float(psnr.mean())}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    n = len(psnr)
    pd.DataFrame({"eval": "e", "sample": np.arange(n) // 2, "seed": np.arange(n) % 2, "psnr": psnr,
                  "floor_psnr": 130.0, "jitter_psnr": 0.5}).to_csv(run_dir / "video_metrics.csv", index=False)
    return Run(folder / "nb.ipynb", params, run_dir, "done", metrics=metrics)


def test_paired_difference_against_the_baseline_point(tmp_path):
    rng = np.random.default_rng(0)
    base = 40 + 3 * rng.standard_normal(32)  # clip-to-clip spread far larger than the differences
    runs = [_run(tmp_path / "runs", 0.5, base + 2.0, 45.0),  # 2 dB better on every clip: real
            _run(tmp_path / "runs", 0.75, base, 44.0),
            _run(tmp_path / "runs", 0.9, base + 0.1 * rng.standard_normal(32), 43.0)]  # noise: not significant
    aggregate(runs, tmp_path / "tables", "sweep", baseline={"alpha": 0.75})
    iv = pd.read_csv(tmp_path / "tables" / "sweep_intervals.csv").set_index("method")
    better, same = iv.loc["alpha=0.5"], iv.loc["alpha=0.9"]  # labelled by the parameters that vary
    assert better["d_psnr"] == pytest.approx(2.0) and better["d_psnr_lo"] == pytest.approx(2.0)
    assert better["d_psnr_sig"] == "*"  # excludes 0 and beyond the 0.5 dB jitter
    assert same["d_psnr_lo"] < 0 < same["d_psnr_hi"]
    assert iv.loc["alpha=0.75", "psnr_lo"] < base.mean() < iv.loc["alpha=0.75", "psnr_hi"]
    md = (tmp_path / "tables" / "sweep.md").read_text()
    assert "95 % intervals (32 clips per run" in md and "Δpsnr vs alpha=0.75" in md


def test_without_per_clip_metrics_there_is_no_interval_table(tmp_path):
    run = _run(tmp_path / "runs", 0.5, np.ones(4), 45.0)
    (run.run_dir / "video_metrics.csv").unlink()
    aggregate([run], tmp_path / "tables", "sweep")
    assert not (tmp_path / "tables" / "sweep_intervals.csv").exists()
    assert "intervals" not in (tmp_path / "tables" / "sweep.md").read_text()


def test_runs_on_disk_with_other_parameters_stay_out(tmp_path):
    runs = [_run(tmp_path / "runs", 0.5, np.ones(4), 45.0)]
    other = tmp_path / "runs" / slug({})  # e.g. the notebook run with its defaults: no alpha parameter
    other.mkdir()
    (other / "params.json").write_text("{}")
    (other / "metrics.json").write_text(json.dumps({"mean_sqnr_db": 1.0}))
    df = aggregate(runs, tmp_path / "tables", "sweep", disk=tmp_path / "runs")
    assert list(df["run"]) == [slug({"alpha": 0.5})]
