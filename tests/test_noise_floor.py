"""The noise floor (vidquant.eval.noise) and the multi-seed eval plan of a run."""

from __future__ import annotations

import numpy as np
import pytest
from tests_support import tiny_config, write_config

from vidquant.calib.samples import load_samples
from vidquant.config import load_config
from vidquant.eval.metrics import psnr
from vidquant.eval.noise import EvalPlan, floor_metrics, nudge_first_latent
from vidquant.generate import GenParams, generate_video, generate_videos
from vidquant.models.loading import load_pipeline
from vidquant.run import quantize


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_nudge_moves_the_clip_a_little_and_deterministically(tiny_dirs, task):
    pipe = load_pipeline(tiny_dirs[task], "WanI2V" if task == "i2v" else "WanT2V", "torch.float32", "cpu")
    sample = load_samples(f"assets/eval/tiny_{task}", task)[0]
    params = GenParams(32, 32, 5, 5.0, 4, 7, 16)
    ref = generate_video(pipe, sample, params)
    a, b = (generate_videos(pipe, [sample], params, [7], callback=nudge_first_latent)[7][0] for _ in range(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, ref)  # the nudge reaches the clip...
    assert 40 < psnr(a, ref) < np.inf  # ...and stays far below any quantization error
    row = floor_metrics(a, ref, sample.prompt)
    assert row["floor_psnr"] == psnr(a, ref) and 0 < row["floor_ssim"] <= 1
    assert {"floor_traj_err_px", "floor_colour_de", "floor_traj_drift_px", "floor_colour_drift_de"} <= set(row)


def test_plan_seeds_and_floor_in_the_run(tmp_path, tiny_dirs):
    cfg = tiny_config(tmp_path, tiny_dirs["t2v"], "t2v")
    cfg["eval"]["num_samples"] = 2
    cfg["save"]["save_lightx2v"] = False
    result = quantize(load_config(write_config(tmp_path, cfg)), progress=False,
                      plan=EvalPlan(seeds=(1, 2), noise_floor=True, jitter=True))
    vm = result.video_metrics
    assert sorted(zip(vm["seed"], vm["sample"])) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert np.isfinite(vm["floor_psnr"]).all()
    assert not vm.loc[vm.seed == 1, "psnr"].equals(vm.loc[vm.seed == 2, "psnr"])  # the seeds are different clips
    assert result.summary["video_floor_psnr"] == pytest.approx(vm["floor_psnr"].mean())
    assert {"traj_err_px", "colour_de", "float_traj_err_px"} <= set(vm.columns)
    assert (vm.loc[vm.seed == 1, "jitter_psnr"] >= 0).all() and "jitter_colour_de" in vm
    assert (vm["traj_drift_px"] >= 0).all() and "floor_colour_drift_de" in vm and "jitter_traj_drift_px" in vm
    assert vm.loc[vm.seed == 2, "jitter_psnr"].isna().all()  # measured on the first seed's clips only
    assert len(list((tmp_path / "videos").glob("fake_quant_output_*.mp4"))) == 2  # the first seed's clips


def test_plan_rejects_bad_seeds():
    with pytest.raises(ValueError, match="distinct"):
        EvalPlan(seeds=(1, 1))
    with pytest.raises(ValueError, match="at least one"):
        EvalPlan(seeds=())
    assert EvalPlan().seeds_for(42) == (42,)
