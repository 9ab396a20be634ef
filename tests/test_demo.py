"""`make demo` (vidquant.demo): the whole seed workflow. Fast version on the random test-size I2V model with a
small config; the real one (shipped config, trained or fallback model, ~2 min) is marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tests_support import tiny_config

from vidquant.demo import build_config, comparison_grid, main, run_demo
from vidquant.eval.video import load_video
from vidquant.export.lightx2v_config import read_lightx2v_config

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("float_vs_quantized.mp4", "float_vs_quantized.gif", "metrics.csv", "metrics.md", "lightx2v_output.mp4",
           "wan_i2v_advanced_ptq.json", "MODEL_PATH", "lightx2v_converted/config.json",
           "llmc/lightx2v_quant_model/config.json")


def _check_outputs(out: Path, n_samples: int) -> pd.DataFrame:
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert len(list((out / "videos").glob("sample_*_float_fake_w8a8.mp4"))) == n_samples
    cfg = read_lightx2v_config(out / "wan_i2v_advanced_ptq.json")
    assert cfg["quant_scheme"] == "int8" and cfg["quant_method"] == "advanced_ptq"
    df = pd.read_csv(out / "metrics.csv")
    assert len(df) == 3 * n_samples and set(df["model"]) == {"float", "LLMC fake-quant", "W8A8 runtime"}
    runtime = df[df["model"] == "W8A8 runtime"]
    assert runtime["psnr"].map(math.isfinite).all()
    # The runtime follows the fake-quant model of the same export far more closely than either follows float.
    assert (runtime["psnr_vs_fake_quant"] > 40).all(), runtime
    return df


def test_demo_end_to_end_on_test_model(tmp_path, tiny_i2v_dir):
    raw = tiny_config(tmp_path, tiny_i2v_dir, "i2v", method="SmoothQuant")
    raw["quant"]["video_gen"]["special"] = {"alpha": 0.75}
    for section in ("calib", "eval"):
        raw[section]["path"] = str(REPO / raw[section]["path"])
    config = tmp_path / "sq.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = run_demo(model=tiny_i2v_dir, config=config, out=tmp_path / "demo", device="cpu")
    _check_outputs(out, n_samples=8)
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
    shipped = REPO / "configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml"
    assert shipped.is_file()  # the in-code fallback is the shipped recipe
    assert build_config(shipped, tmp_path / "m", tmp_path / "o").quant == cfg.quant


def test_comparison_grid_layout():
    clip = np.zeros((4, 16, 20, 3), dtype=np.float32)
    grid = comparison_grid([[clip, clip, clip], [clip, clip, clip]], gap=2)
    # label strip 12 px, then per sample a 2 px bar and a 16 px row; three 20 px columns with 2 px gaps
    assert grid.shape == (4, 12 + 2 * (2 + 16), 3 * 20 + 2 * 2, 3)


@pytest.mark.slow
def test_make_demo(tmp_path):
    """What `make demo` runs, into a temporary folder."""
    assert main(["--out", str(tmp_path / "demo")]) == 0
    _check_outputs(tmp_path / "demo", n_samples=8)
