"""The library side of the notebooks (no kernel): configs from parameters, run records, comparisons, the
algorithms' reports, fp8 rounding, checkpoint listings, clips and `vidquant.plots` figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from vidquant import compare, display, plots, records, variants
from vidquant.algos import report
from vidquant.export import listing
from vidquant.quant import fp8_rounding

ROOT = Path(__file__).resolve().parents[1]
T2V = ROOT / "configs/quantization/video_gen/tiny_t2v"


# ------------------------------------------------------------------------------------------------- configs
def test_notebook_config_maps_parameters(tmp_path):
    cfg = variants.notebook_config(T2V / "smoothquant_w_a.yaml", model_path="m", calib_path="c", eval_path="e",
                             output_dir=tmp_path, seed=7, height=32, width=48, num_frames=5, num_inference_steps=3,
                             sample_steps=2, num_eval_samples=1, eval_seeds=(42, 43), noise_floor=True,
                             save_lightx2v=False, overrides={"quant.video_gen.special.alpha": 0.6})
    ev = cfg.evals[0]
    assert (cfg.model.path, cfg.calib.path, ev.path, cfg.base.seed) == ("m", "c", "e", 7)
    for section in (cfg.calib, ev):
        assert (section.target_height, section.target_width, section.num_frames, section.num_inference_steps) == \
            (32, 48, 5, 3)
    assert cfg.calib.sample_steps == 2 and ev.num_samples == 1 and list(ev.seeds) == [42, 43]
    assert ev.noise_floor and ev.jitter
    assert cfg.save.save_path == str(tmp_path) and not cfg.save.save_lightx2v
    assert ev.output_video_path == str(tmp_path / "videos")
    assert cfg.quant.video_gen.special["alpha"] == 0.6
    assert cfg.source == str(T2V / "smoothquant_w_a.yaml")


def test_notebook_config_none_keeps_the_file(tmp_path):
    from vidquant.config import load_config

    path = T2V / "rtn_w_a.yaml"
    assert variants.notebook_config(path) == load_config(path)


def test_notebook_config_errors_name_the_field():
    from vidquant.config import ConfigError

    with pytest.raises(ConfigError, match="config file not found"):
        variants.notebook_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match="alpha"):
        variants.notebook_config(T2V / "smoothquant_w_a.yaml", overrides={"quant.video_gen.special.alpha": 2})


def test_variant_and_rtn_baseline(tmp_path):
    cfg = variants.notebook_config(T2V / "smoothquant_w_a.yaml", output_dir=tmp_path)
    rtn = variants.as_rtn(cfg, tmp_path / "rtn")
    assert rtn.quant.video_gen.methods == ["RTN"] and rtn.quant.video_gen.special == {}
    assert rtn.save.save_path == str(tmp_path / "rtn") and not rtn.save.save_lightx2v
    assert rtn.evals[0].output_video_path == str(tmp_path / "rtn" / "videos")
    assert rtn.quant.video_gen.weight == cfg.quant.video_gen.weight and rtn.calib == cfg.calib
    assert cfg.quant.video_gen.methods == ["SmoothQuant"]  # the original is untouched


def test_bit_overrides_and_labels():
    assert variants.bit_overrides() == {}
    assert variants.bit_overrides(4, 0) == {"quant.video_gen.weight.bit": 4, "quant.video_gen.act": None}
    cfg = variants.notebook_config(T2V / "rtn_w_a.yaml", overrides=variants.bit_overrides(4, 0))
    assert variants.scheme_label(cfg) == "int4/fp"
    cfg = variants.notebook_config(T2V / "rtn_w_a.yaml", overrides=variants.bit_overrides(6, 6))
    assert variants.scheme_label(cfg) == "int6/int6"


def test_lightx2v_config_for(tmp_path):
    cfg = variants.notebook_config(T2V / "smoothquant_w_a_fp8.yaml")
    written = variants.lightx2v_config_for(cfg, tmp_path / "ckpt", tmp_path / "lx.json")
    assert written["dit_quant_scheme"] == "fp8-vllm" and written["task"] == "t2v"
    assert json.loads((tmp_path / "lx.json").read_text())["quant_method"] == "advanced_ptq"


# ------------------------------------------------------------------------------------------------- metrics
def test_record_and_read_metrics_round_trip(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    table = records.record_metrics({"a": np.float32(1.5), "b": torch.tensor(3), "inf": math.inf,
                               "rtn": {"psnr": 30.0, "ok": True}, "name": "x", "p": Path("q")}, path)
    assert list(table.columns) == ["metric", "value"]
    data = json.loads(path.read_text())
    assert data == {"a": 1.5, "b": 3, "inf": "inf", "rtn.psnr": 30.0, "rtn.ok": True, "name": "x", "p": "q"}
    assert records.read_metrics(path)["inf"] == math.inf
    assert not list(tmp_path.glob("sub/*.writing"))
    with pytest.raises(TypeError, match="not a scalar"):
        records.flatten_metrics({"bad": [1, 2]})
    assert records.metrics_file("out") == Path("out/metrics.json")
    assert records.metrics_file("out", "x.json") == Path("x.json")


def test_collect_runs_method_table_and_swept_params(tmp_path):
    for stem, run, params, metrics in (
        ("02_rtn_baseline", "defaults", {}, {"method": "RTN", "weight": "int8", "act": "int8", "video_psnr": 30}),
        ("03_smoothquant", "alpha-0.5", {"alpha": 0.5}, {"method": "SmoothQuant", "video_psnr": 31}),
    ):
        d = tmp_path / stem / run
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(params))
        (d / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "03_smoothquant" / "alpha-0.9").mkdir()  # an unfinished run: no metrics.json
    runs = records.collect_runs(tmp_path)
    assert list(runs["run"]) == ["defaults", "alpha-0.5"] and runs["alpha"].iloc[1] == 0.5
    methods = records.method_table(runs)
    assert list(methods["label"]) == ["02_rtn_baseline: RTN int8/int8"]
    assert records.method_table(pd.DataFrame()).empty
    table = pd.DataFrame({"run": ["alpha-0.5__w_bit-4", "alpha-0.75__w_bit-4"], "alpha": [0.5, 0.75],
                          "w_bit": [4, 4], "video_psnr": [1, 2]})
    assert records.swept_params(table) == ["alpha", "w_bit"]


# ------------------------------------------------------------------------------------------------- clips
def test_show_clips_is_a_labelled_animated_png(tmp_path):
    """Clips are shown as an animated PNG (plays anywhere, trusted or not), every frame kept, names drawn above."""
    import base64
    import io

    from PIL import Image, ImageSequence

    from vidquant.eval.video import load_video

    rng = np.random.default_rng(0)
    float_clip = rng.random((4, 16, 16, 3), dtype=np.float32)
    quant_clip = np.clip(float_clip + 0.05, 0, 1)
    shown = display.show_clips({"float": float_clip, "W8A8": quant_clip}, tmp_path / "c.mp4", fps=4)
    bundle = shown._repr_mimebundle_()
    assert set(bundle) == {"image/png", "text/plain"} and "float | W8A8" in bundle["text/plain"]
    png = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(png)]
    assert len(frames) == 4 and png.info.get("loop") == 0 and png.info.get("duration") == 250
    strip = display.labelled_strip({"float": float_clip, "W8A8": quant_clip})
    assert strip.shape == (4, display.LABEL_HEIGHT + 128, 2 * 128 + 2, 3)  # 16 px upscaled to 128, 2 px bar
    for got, want in zip(frames, strip):
        np.testing.assert_array_equal(got, want)  # lossless: quantization errors are not blurred away
    # the panels are the clips, upscaled by 8 (nearest), under a label band with dark text on white
    expected = (float_clip[0] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(strip[0, display.LABEL_HEIGHT::8, :128:8], expected)
    band = strip[0, : display.LABEL_HEIGHT]
    assert band.min() < 128 and np.median(band) == 255
    assert load_video(tmp_path / "c.mp4").shape[0] == 4  # the labelled clip also saved as a file
    with pytest.raises(ValueError, match="different heights"):
        display.labelled_strip({"a": float_clip, "b": float_clip[:, :8]})


def test_clip_pair_and_clips_of():
    a, b, c = (np.full((2, 4, 4, 3), v, np.float32) for v in (0.1, 0.2, 0.3))
    runs = {"SQ": SimpleNamespace(videos={("e", 0): (a, b)}), "RTN": SimpleNamespace(videos={("e", 0): (a, c)})}
    clips = compare.clips_of(runs)
    assert list(clips) == ["float", "SQ", "RTN"] and clips["RTN"] is c
    with pytest.raises(ValueError, match="no eval clips"):
        compare.clip_pair(SimpleNamespace(videos={}))


def test_run_intervals_pair_runs_on_the_same_clips():
    """Two runs over 16 prompts × 2 seeds whose PSNR differs by 2 dB in every clip on top of a shared 3 dB prompt
    spread: the unpaired intervals overlap, the paired difference against the baseline run is +2 dB and real."""
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 3, 32)
    def run(shift):
        vm = pd.DataFrame({"eval": "e", "sample": np.arange(32) % 16, "seed": np.arange(32) // 16,
                           "psnr": 40 + shift + spread + rng.normal(0, 0.05, 32)})
        return SimpleNamespace(video_metrics=vm, summary={"method": "SmoothQuant", "mean_sqnr_db": 40.0 + shift})
    table = compare.run_intervals({"SQ": run(2.0), "RTN": run(0.0)}, baseline="RTN")
    assert list(table.index) == ["SQ", "RTN"] and list(table["clips"]) == [32, 32]
    assert table.loc["SQ", "Δpsnr vs RTN"].startswith("+2") and table.loc["SQ", "Δpsnr vs RTN"].endswith("*")
    assert table.loc["RTN", "Δpsnr vs RTN"] == "" and table.loc["SQ", "mean_sqnr_db"] == "42"
    assert "psnr floor" not in table  # not measured by these runs: no column of dashes
    assert compare.run_intervals({"RTN": SimpleNamespace(video_metrics=pd.DataFrame(), summary={})}).empty


def test_fidelity_table():
    ref = [np.zeros((2, 8, 8, 3), np.float32)]
    other = [np.full((2, 8, 8, 3), 0.1, np.float32)]
    table = compare.fidelity_table({"q": other}, {"float": ref, "q": other})
    assert list(table["vs"]) == ["float"] and table["psnr"].iloc[0] == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------- analysis
def test_smoothing_and_algo_tables():
    sq = {"x_max": torch.tensor([1.0, 8.0, 1.0]), "scale": torch.tensor([1.0, 4.0, 1.0])}
    logs = {0: {"smoothquant": {"ffn_up": sq},
                "awq": {"ffn_up": {"ratio": 0.5, "ratios": [0.0, 0.5], "losses": torch.tensor([[2.0], [1.0]]),
                                   "loss": 1.0, "scale": torch.ones(3)}}}}
    result = SimpleNamespace(logs=logs)
    table = report.smoothing_table(result)
    assert list(table["x_max_smoothed"]) == [1.0, 2.0, 1.0]
    summary = report.smoothing_summary(table)
    assert summary.loc[(0, "ffn_up"), "outlier_ratio_before"] == 8.0
    assert summary.loc[(0, "ffn_up"), "outlier_ratio_after"] == 2.0
    algo = report.algo_log_table(result, "awq")
    assert list(algo.columns) == ["block", "name", "ratio", "loss"]  # tensors and lists are left out
    curves = report.awq_search_curves(result, 0)
    assert list(curves["loss"]) == [2.0, 1.0] and list(curves["chosen"]) == [False, True]
    assert report.smoothing_table(SimpleNamespace(logs={})).empty


def test_fp8_rounding_differs_only_on_ties():
    ties = fp8_rounding.fp8_tie_points("e4m3")
    assert torch.all(ties[1:] > ties[:-1]) and ties.max() < 448
    table = fp8_rounding.fp8_rounding_table(torch.cat([ties, torch.tensor([0.3, -5.1, 100.2])]))
    assert not table["differ"].iloc[-3:].any()  # off-tie values round the same
    diff = table[table["differ"]]
    assert len(diff) > 0 and set(diff["steps"].abs()) == {1}
    # qtorch rounds the differing ties away from zero
    assert (np.sign(diff["qtorch"] - diff["native"]) == np.sign(diff["x"])).all()


def test_checkpoint_table_and_key_renames(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(4, 2, dtype=torch.int8),
               "blocks.0.attn1.to_q.weight_scale": torch.ones(4, 1)}, str(tmp_path / "a.safetensors"))
    table = listing.checkpoint_table(tmp_path)
    assert list(table["dtype"]) == ["int8", "float32"] and list(table["bytes"]) == [8, 16]
    renames = listing.key_renames(list(table["key"]) + ["blocks.0.affine_norm1.weight"])
    assert list(renames["after"]) == ["blocks.0.self_attn.q.weight", "blocks.0.self_attn.q.weight_scale"]


# ------------------------------------------------------------------------------------------------- plots
def _labelled(fig) -> None:
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ax in fig.axes:
        if ax.has_data() and len(ax.get_xticks()) and not ax.images:
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def test_every_figure_is_labelled():
    rng = np.random.default_rng(0)
    layers = pd.DataFrame({"block": [0, 0, 1], "layer": ["a", "b", "a"], "sqnr_db": [40.0, 35.0, 42.0]})
    steps = pd.DataFrame({"timestep": [999.0, 999.0, 500.0, 500.0], "branch": ["cond", "uncond"] * 2,
                          "rel_err": [0.01, 0.02, 0.005, 0.006], "method": "SQ"})
    smooth = pd.DataFrame({"block": 0, "subset": "ffn_up", "channel": range(4), "x_max": [1.0, 9.0, 1.0, 2.0],
                           "scale": [1.0, 3.0, 1.0, 1.2], "x_max_smoothed": [1.0, 3.0, 1.0, 1.6]})
    stats = pd.DataFrame({"subset": "ffn_up", "branch": ["cond", "uncond"], "timestep": [999.0, 999.0],
                          "absmax": [3.0, 3.5], "token_absmax_median": [1.0, 1.1]})
    clip = rng.random((3, 8, 8, 3))
    tables = {"a": pd.DataFrame({"dtype": ["int8", "float32"], "bytes": [100, 50]})}
    sweep = pd.DataFrame({"run": ["alpha-0.5", "alpha-0.75"], "alpha": [0.5, 0.75], "video_psnr": [30, 31],
                          "rtn.video_psnr": [29, 29]})
    figures = [
        plots.activation_outliers({"ffn_up": torch.tensor([1.0, 5.0, 2.0])}),
        plots.smoothing(smooth, 0, alpha=0.75),
        plots.captured_calls({"uniform": [0, 1, 6, 7], "first": [0, 1, 2, 3]}, 2, 4),
        plots.activation_range(stats),
        plots.awq_search(pd.DataFrame({"subset": "ffn_up", "ratio": [0.0, 0.5], "loss": [2.0, 1.0],
                                       "chosen": [False, True]})),
        plots.layer_sqnr(layers),
        plots.timestep_error(steps),
        plots.timestep_error(steps, boundary=875.0),
        plots.frames_side_by_side({"float": clip, "quant": clip * 0.9}),
        plots.fp8_rounding(fp8_rounding.fp8_rounding_table(fp8_rounding.fp8_tie_points())),
        plots.fp8_code_mismatch(pd.DataFrame({"block": [0], "layer": ["a"], "n": [10], "differ": [0],
                                              "frac": [0.0]})),
        plots.checkpoint_sizes(tables),
        plots.metric_vs_param(sweep, "alpha", ["video_psnr"], baselines={"video_psnr": 29}),
        plots.metric_bars(sweep, ["video_psnr"], label="run"),
        plots.sweep(sweep, title="03_smoothquant"),
        plots.paired_differences(pd.DataFrame({
            "method": ["SQ", "GPTQ"], "format": "W4A8", "d_psnr": [-1.9, 5.2], "d_psnr_lo": [-3.5, 3.2],
            "d_psnr_hi": [-0.5, 7.3], "d_psnr_sig": ["*", ""], "psnr_jitter": [0.5, 3.7]})),
    ]
    for fig in figures:
        _labelled(fig)
    assert plots.sweep(sweep.iloc[:1]) is None  # one run: nothing to plot against
    assert plots.paired_differences(pd.DataFrame({"method": ["RTN"], "format": ["W4A8"], "psnr": [36.0]})) is None
