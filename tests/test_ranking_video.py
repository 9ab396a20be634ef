"""The video check of the CPU-class ranking (vidquant.eval.ranking --video): overlapping intervals and no
significant difference against RTN reversed between two run roots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from vidquant.eval.ranking import main, video_overlap
from vidquant.tables import cell_dir


def _cell(root, method: str, psnr: np.ndarray) -> None:
    run_dir = cell_dir(root, "t2v", method, "W8A8-int8")
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"mean_sqnr_db": 40.0, "mean_timestep_rel_err": 0.01}))
    n = len(psnr)
    pd.DataFrame({"eval": "e", "sample": np.arange(n) // 2, "seed": np.arange(n) % 2, "psnr": psnr,
                  "traj_err_px": 0.5, "colour_de": 5.0, "jitter_psnr": 0.1}).to_csv(run_dir / "video_metrics.csv",
                                                                                     index=False)


def test_overlap_and_reversed_differences(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = 40 + rng.standard_normal(32)
    _cell(tmp_path / "a", "RTN", base)
    _cell(tmp_path / "a", "GPTQ", base + 3)
    _cell(tmp_path / "b", "RTN", base + 0.2 * rng.standard_normal(32))
    _cell(tmp_path / "b", "GPTQ", base + 3 + 0.2 * rng.standard_normal(32))
    df = video_overlap("t2v", (tmp_path / "a", tmp_path / "b"), ["RTN", "GPTQ"], ["W8A8-int8"])
    psnr = df[df["metric"] == "psnr"].set_index("method")
    assert psnr["overlap"].all() and not psnr["d_conflict"].any()
    assert psnr.loc["GPTQ", "d_a"].endswith("*") and psnr.loc["GPTQ", "d_b"].endswith("*")
    args = ["--video", str(tmp_path / "a"), str(tmp_path / "b"), "--methods", "RTN", "GPTQ", "--formats", "W8A8-int8"]
    assert main(args) == 0

    _cell(tmp_path / "c", "RTN", base + 5)  # GPTQ 2 dB *worse* than RTN here, and RTN's interval moved away
    _cell(tmp_path / "c", "GPTQ", base + 3)
    assert main([*args[:2], str(tmp_path / "c"), *args[3:]]) == 1
    out = capsys.readouterr().out
    assert "intervals overlap; 1 significant differences against RTN reversed" in out
