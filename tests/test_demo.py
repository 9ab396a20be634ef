"""`make demo` (vidquant.demo): the whole seed workflow. Fast version on the random test-size I2V model with a
small config and the quick plan (3 prompts × 2 seeds); the shipped config and model (4 prompts × seed 42, ~2 min)
is marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tests_support import tiny_config

from vidquant.demo import EVAL_SET, build_config, comparison_grid, main, run_demo
from vidquant.eval.stats import mean_ci, paired_difference
from vidquant.eval.video import load_video
from vidquant.export.lightx2v_config import read_lightx2v_config

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("float_vs_quantized.mp4", "float_vs_quantized.gif", "metrics.csv", "metrics.md", "lightx2v_output.mp4",
           "wan_i2v_advanced_ptq.json", "MODEL_PATH", "lightx2v_converted/config.json",
           "llmc/lightx2v_quant_model/config.json")


def _check_outputs(out: Path, n_samples: int, seeds: tuple[int, ...]) -> pd.DataFrame:
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert len(list((out / "videos").glob("sample_*_float_fake_w8a8.mp4"))) == min(n_samples, 8)
    cfg = read_lightx2v_config(out / "wan_i2v_advanced_ptq.json")
    assert cfg["quant_scheme"] == "int8" and cfg["quant_method"] == "advanced_ptq"
    df = pd.read_csv(out / "metrics.csv", float_precision="round_trip")  # the exact values the summary used
    assert len(df) == 3 * n_samples * len(seeds) and set(df["model"]) == {"float", "LLMC fake-quant", "W8A8 runtime"}
    assert sorted(set(df["seed"])) == sorted(seeds) and set(df["sample"]) == set(range(n_samples))
    runtime = df[df["model"] == "W8A8 runtime"]
    assert runtime["psnr"].map(math.isfinite).all()
    # The runtime follows the fake-quant model of the same export (and the same seed: another seed's noise gives
    # another clip) far more closely than either follows float.
    assert (runtime["psnr_vs_fake_quant"] > 40).all(), runtime
    # float and fake-quant clips paired by seed as the quantize run paired them: the same per-clip PSNR
    run = pd.read_csv(out / "llmc" / "video_metrics.csv", float_precision="round_trip")
    fake = df[df["model"] == "LLMC fake-quant"].merge(run, on=["sample", "seed"], suffixes=("", "_run"))
    assert len(fake) == n_samples * len(seeds) and (fake["psnr"] == fake["psnr_run"]).all()
    _check_report((out / "metrics.md").read_text(), df)
    return df


def _cells(md: str, first: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``first``."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    matches = [r for r in rows if r[0] == first]
    assert len(matches) == 1, (first, md)
    return matches[0]


def _header(md: str, first: str) -> list[str]:
    return next([c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
                if line.startswith(f"| {first} "))


def _check_report(md: str, df: pd.DataFrame) -> None:
    """metrics.md: each model's mean [95 % interval] and the paired runtime - fake-quant difference, the numbers of
    metrics.csv's clips; no per-clip rows."""
    # in the csv's order (the bootstrap resamples in row order), the same (seed, sample) on each row of both
    runtime, fake = (df[df["model"] == m] for m in ("W8A8 runtime", "LLMC fake-quant"))
    key = ["seed", "sample"]
    assert (runtime[key].to_numpy() == fake[key].to_numpy()).all()
    header = _header(md, "model")
    for model in ("float", "LLMC fake-quant", "W8A8 runtime"):
        cells = dict(zip(header, _cells(md, model)))
        clips = df[df["model"] == model]
        assert int(cells["clips"]) == len(clips)
        for metric in ("traj_err_px", "colour_de"):
            iv = mean_ci(clips[metric])
            assert cells[metric] == f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]", (model, metric, cells)
    iv = mean_ci(runtime["psnr"])
    assert dict(zip(header, _cells(md, "W8A8 runtime")))["psnr"] == f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]"
    diff = dict(zip(_header(md, "paired difference"), _cells(md, "W8A8 runtime − LLMC fake-quant")))
    for metric in ("psnr", "colour_de"):
        d = paired_difference(runtime[metric].to_numpy(), fake[metric].to_numpy())
        assert diff[metric].startswith(f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}]"), (metric, diff)
    # the noise floor row: the float model's one-ulp-nudged clips, measured once per (prompt, seed)
    floors = df[df["model"] == "float"]
    floor_cells = dict(zip(header, _cells(md, "noise floor")))
    assert int(floor_cells["clips"]) == len(floors)
    for metric in ("ssim", "traj_drift_px", "colour_de"):
        iv = mean_ci(floors[f"floor_{metric}"])
        assert floor_cells[metric] == f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]", (metric, floor_cells)
    for model in ("LLMC fake-quant", "W8A8 runtime"):  # ≤floor exactly where the model is as close as the nudge
        clips = df[df["model"] == model]
        at_floor = clips["ssim"].mean() >= floors["floor_ssim"].mean()
        assert dict(zip(header, _cells(md, model)))["ssim"].endswith(" ≤floor") == at_floor
    assert df.loc[df["model"] == "LLMC fake-quant", "jitter_psnr"].notna().any()
    assert len([line for line in md.splitlines() if line.startswith("|")]) < 13  # summaries, not per-clip rows


def test_demo_end_to_end_on_test_model(tmp_path, tiny_i2v_dir):
    raw = tiny_config(tmp_path, tiny_i2v_dir, "i2v", method="SmoothQuant")
    raw["quant"]["video_gen"]["special"] = {"alpha": 0.75}
    for section in ("calib", "eval"):
        raw[section]["path"] = str(REPO / raw[section]["path"])
    config = tmp_path / "sq.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = run_demo(model=tiny_i2v_dir, config=config, out=tmp_path / "demo", device="cpu", prompts=3, seeds=(42, 7))
    _check_outputs(out, n_samples=3, seeds=(42, 7))
    assert Path((out / "MODEL_PATH").read_text().strip()) == tiny_i2v_dir.resolve()
    assert load_video(out / "lightx2v_output.mp4").shape[0] == 5


def test_missing_model_falls_back_loudly(tmp_path, capsys):
    from vidquant.demo import choose_model

    path, is_random = choose_model(tmp_path / "no-such-model", tmp_path)
    assert is_random and (path / "model_index.json").is_file()
    assert "RANDOM, UNTRAINED" in capsys.readouterr().out


def test_config_built_in_code_matches_the_seed_recipe(tmp_path):
    cfg = build_config(tmp_path / "missing.yaml", tmp_path / "model", tmp_path / "out")
    vg = cfg.quant.video_gen
    assert vg.methods == ["SmoothQuant"] and vg.special["alpha"] == 0.75
    assert (vg.weight.bit, vg.weight.granularity, vg.act.bit, vg.act.granularity) == (8, "per_channel", 8, "per_token")
    assert cfg.save.save_lightx2v and cfg.save.save_path == str(tmp_path / "out" / "llmc")
    ev = cfg.evals[0]  # the demo's eval plan: 32 prompts × seeds 42, 43, the seeds of a sample in one batch
    assert (Path(ev.path), ev.num_samples, ev.seeds, ev.bs) == (REPO / EVAL_SET, 32, [42, 43], 2)
    shipped = REPO / "configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml"
    assert shipped.is_file()  # the in-code fallback is the shipped recipe
    assert build_config(shipped, tmp_path / "m", tmp_path / "o").quant == cfg.quant


def test_comparison_grid_layout():
    clip = np.zeros((4, 16, 20, 3), dtype=np.float32)
    grid = comparison_grid([[clip, clip, clip], [clip, clip, clip]], gap=2)
    # label strip 12 px, then per sample a 2 px bar and a 16 px row; three 20 px columns with 2 px gaps
    assert grid.shape == (4, 12 + 2 * (2 + 16), 3 * 20 + 2 * 2, 3)


@pytest.mark.parametrize("argv, message", [
    (["--prompts", "0"], "--prompts: got 0; expected an integer in 1..32"),
    (["--prompts", "33"], "--prompts: got 33; expected an integer in 1..32"),
    (["--prompts", "four"], "--prompts: invalid int value: 'four'"),
    (["--seeds", "42", "42"], "--seeds: got [42, 42]; expected distinct seeds"),
    (["--seeds", "-1"], "--seeds: got [-1]; expected one or more integers in 0..2**63-1"),
    (["--seeds"], "--seeds: expected at least one argument"),
])
def test_bad_plan_is_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # nothing deleted, nothing written


def test_bad_plan_through_the_cli_exits_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vidquant.cli", "demo", "--out", str(tmp_path / "demo"),
                           "--prompts", "40"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--prompts: got 40" in proc.stderr, proc.stderr
    assert not (tmp_path / "demo").exists()


def test_run_demo_refuses_a_bad_plan(tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        run_demo(out=tmp_path / "demo", prompts=4, seeds=())
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_make_demo(tmp_path):
    """What `make demo` runs, into a temporary folder, with the quick plan (4 prompts, seed 42)."""
    assert main(["--out", str(tmp_path / "demo"), "--prompts", "4", "--seeds", "42"]) == 0
    _check_outputs(tmp_path / "demo", n_samples=4, seeds=(42,))
