"""Wan2.2: loading (A14B T2V / I2V mixtures, TI2V-5B in both modes), per-expert calibration capture, the two-checkpoint
lightx2v export -> convert -> verify -> quantized MoE runtime, the MoE inference JSON, the configs for real
checkpoints, and the black-clip guard. (Every method x every exported format: tests/test_wan22_formats.py.)

Fast tests run on random test-size pipelines with the real Wan2.2 directory layouts
(`models.tiny.make_random_tiny_wan22_dir`); the slow ones on the shipped trained `assets/models/tiny-wan22-*`.

Runtime vs fake-quant, and why the bounds are what they are (docs/wan22.md, "Runtime vs fake-quant"):

* Teacher-forced, every expert call of a fake-quant generation (both experts, both CFG branches): the fake-quant
  twin rebuilt from each converted checkpoint (`runtime.model.fake_quant_twin`) gives exactly (== 0) the
  prediction of the fake-quant expert `quantize` evaluated, so each checkpoint holds its own expert's weights,
  scales and smoothing, and both pipelines send each step to the same expert. Per layer, the real GEMM equals
  the fake-quant linear up to fp32 rounding (<= 1e-5 rel.).
* Whole denoiser, one step: random 2-block models <= 1e-4 (as Wan2.1's tests/test_runtime.py). On the trained
  6-block mixture the fp32 rounding differences flip activation codes that cascade through the blocks: up to
  ~1.3e-2 rel. (quantization error ~8e-3 int8); the fake-quant model does the same to itself when its latent
  moves by one ulp (up to ~2e-2), so the bound is 2x that self-sensitivity.
* Clips: random models >= 40 dB vs fake-quant (Wan2.1's demo bound). The trained mixture's quantized generation
  is chaotic: over 17 clips (5 recipes x int8 / fp8, 2 prompts) the fake-quant model's own clip with its latent
  nudged by one ulp after the first step lands 22.9-46.8 dB from its clip, the runtime's 26.2-48.9 dB (and a
  runtime with lightx2v's numerics and bf16 scales, a different function, 23.9-45.8 dB: end-to-end PSNR cannot
  tell them apart, the teacher-forced checks can). So: the twin pipeline redraws the fake-quant clips bit for
  bit, and the runtime's clips are >= 20 dB from them (below the one-ulp spread) and > 25 dB from float.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests_support import infer_clip, tiny_config

from vidquant.calib import capture_expert_inputs, load_samples
from vidquant.config import Config, load_config, parse_config
from vidquant.eval.metrics import psnr
from vidquant.export.experts import (
    convert_experts,
    read_moe_config,
    verify_experts,
    write_lightx2v_moe_config,
)
from vidquant.export.lightx2v_config import ConfigError, read_lightx2v_config
from vidquant.generate import GenParams, generate_video
from vidquant.models import ModelLoadError, block_linear_names, inspect_checkpoint, load_pipeline, pipeline_experts
from vidquant.models.tiny import make_random_tiny_wan22_dir
from vidquant.quant import W8A8Linear
from vidquant.run import load_eval_samples, quantize
from vidquant.runtime.infer import main as infer_main
from vidquant.runtime.moe import ExpertOutputError, load_quantized_moe_pipeline

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a red square moving left on a dark background"
TYPES = {"t2v_moe": "Wan22T2V", "i2v_moe": "Wan22I2V", "ti2v": "Wan22TI2V"}


@pytest.fixture(scope="module")
def wan22_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan22")
    return {kind: make_random_tiny_wan22_dir(kind, root / kind) for kind in TYPES}


# ----------------------------------------------------------------------------------------------- loading


def test_load_wan22_layouts_with_dtype_policy(wan22_dirs):
    for kind, path in wan22_dirs.items():
        info = inspect_checkpoint(path)
        assert info.model_type == TYPES[kind]
        pipe = load_pipeline(path, TYPES[kind], "torch.bfloat16")
        names = [e.name for e in pipeline_experts(pipe)]
        assert names == (["transformer"] if kind == "ti2v" else ["transformer", "transformer_2"])
        for name in names:
            tr = getattr(pipe, name)
            assert tr.dtype == torch.bfloat16 and tr.blocks[0].scale_shift_table.dtype == torch.float32
            assert len(block_linear_names(tr.blocks[0])) == 10  # no image k/v projections in Wan2.2
        assert pipe.vae.dtype == torch.float32
        assert pipe.config.expand_timesteps == (kind == "ti2v")


def test_experts_split_at_the_boundary_as_diffusers(wan22_dirs):
    pipe = load_pipeline(wan22_dirs["t2v_moe"], dtype="float32")
    high, low = pipeline_experts(pipe)
    assert (high.name, high.role, low.name, low.role) == ("transformer", "high_noise", "transformer_2", "low_noise")
    assert high.serves(875.0) and not low.serves(875.0)  # diffusers: t >= boundary -> transformer
    assert low.serves(874.9) and not high.serves(874.9)
    assert "transformer_2 (low-noise expert)" == low.label


def test_wan22_load_errors_name_the_problem(wan22_dirs, tmp_path):
    import shutil

    with pytest.raises(ModelLoadError, match="model.type is WanT2V but .* two-expert Wan2.2 .* set model.type: "
                                             "Wan22T2V"):
        load_pipeline(wan22_dirs["t2v_moe"], "WanT2V")
    with pytest.raises(ModelLoadError, match="set model.type: Wan22TI2V"):
        load_pipeline(wan22_dirs["ti2v"], "Wan22T2V")
    broken = tmp_path / "broken"
    shutil.copytree(wan22_dirs["t2v_moe"], broken)
    shutil.rmtree(broken / "transformer_2")
    with pytest.raises(ModelLoadError, match="transformer_2: component folder missing"):
        inspect_checkpoint(broken)
    shutil.copytree(wan22_dirs["t2v_moe"] / "transformer", broken / "transformer_2")
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps(index | {"boundary_ratio": None}))
    with pytest.raises(ModelLoadError, match="boundary_ratio is None; a two-expert"):
        inspect_checkpoint(broken)


# ----------------------------------------------------------------------------------------------- capture


@pytest.mark.parametrize("selection", ["uniform", "first"])
def test_capture_gives_each_expert_only_its_own_timesteps(wan22_dirs, selection):
    pipe = load_pipeline(wan22_dirs["t2v_moe"], dtype="float32")
    samples = load_samples(REPO / "assets/calib/tiny_t2v", "t2v")[:2]
    params = GenParams(32, 32, 5, 5.0, 8, 0, max_sequence_length=16)
    data = capture_expert_inputs(pipe, samples, params, sample_steps=4, selection=selection, progress=False)
    boundary = 0.875 * 1000
    assert set(data) == {"transformer", "transformer_2"}
    for name, d in data.items():
        assert len(d) == 2 * 4  # 2 prompts x 4 calls, per expert
        assert {m["expert"] for m in d.meta} == {name}
        assert [m["branch"] for m in d.meta[:4]] == ["cond", "uncond"] * 2
        ts = [m["timestep"] for m in d.meta]
        assert all((t >= boundary) == (name == "transformer") for t in ts), (name, ts)
        # the captured temb is that expert's own (its time embedding), not the other's
        expert = getattr(pipe, name)
        seen = {}

        def grab(module, args, kwargs, seen=seen):
            seen["temb"] = kwargs.get("temb", args[2] if len(args) > 2 else None)

        handle = expert.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
        with torch.no_grad():
            expert(**d.denoiser_inputs[0], return_dict=False)
        handle.remove()
        assert torch.equal(seen["temb"], d.block_kwargs[0]["temb"])
    if selection == "uniform":  # spread over each expert's own steps: the low expert reaches the last step
        assert max(m["step"] for m in data["transformer_2"].meta) == 7


# ----------------------------------------------------------------------------------------------- end to end


def _config(tmp_path: Path, model: Path, model_type: str, method: str, fmt: str, task: str = "t2v",
            **special) -> Config:
    quant = {"bit": 8, "symmetric": True} if fmt == "int8" else {"quant_type": "float-quant", "bit": "e4m3",
                                                                  "symmetric": True}
    raw = tiny_config(tmp_path, model, task, method=method, **quant)
    raw["model"]["type"] = model_type
    raw["eval"]["num_samples"] = 2
    for section in ("calib", "eval"):
        raw[section]["path"] = str(REPO / raw[section]["path"])
    if special:
        raw["quant"]["video_gen"]["special"] = special
    return parse_config(raw, source=str(tmp_path / "cfg.yaml"))


def _runtime_clips(result, pipe) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(runtime, fake-quant, float) clip per eval sample, same seed and sampler."""
    cfg = result.config
    out = []
    for ev, samples in load_eval_samples(cfg):
        params = GenParams.from_section(ev, cfg.base.seed)
        for i, sample in enumerate(samples):
            ref, fake = result.videos[(ev.path, i)]
            out.append((generate_video(pipe, sample, params), fake, ref))
    return out


def keeping_pipe(monkeypatch):
    """``quantize`` that also returns the fake-quant pipeline it evaluated (the one it hands to the black-clip
    guard, after both experts got their fake-quant linears): the reference the runtime is compared with."""
    import vidquant.run as run

    kept, guard = {}, run.guard_experts
    monkeypatch.setattr(run, "guard_experts", lambda pipe: guard(kept.setdefault("pipe", pipe)))

    def go(cfg: Config, out: Path):
        kept.clear()
        return quantize(cfg, progress=False, out_dir=out), kept["pipe"]

    return go


@pytest.fixture
def quantize_keeping_pipe(monkeypatch):
    return keeping_pipe(monkeypatch)


def expert_calls(pipe, sample, params: GenParams) -> list[tuple[str, dict, torch.Tensor]]:
    """Every expert call of one generation, in order: (pipeline attribute, its keyword inputs, its prediction)."""
    calls = []

    def record(module, args, kwargs, output, name):
        calls.append((name, dict(kwargs), output[0].detach().clone()))

    handles = [getattr(pipe, e.name).register_forward_hook(
        lambda m, a, kw, out, name=e.name: record(m, a, kw, out, name), with_kwargs=True)
        for e in pipeline_experts(pipe)]
    try:
        generate_video(pipe, sample, params)
    finally:
        for h in handles:
            h.remove()
    return calls


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@torch.no_grad()
def replay(experts: dict, calls) -> list[float]:
    """Teacher-forced: each recorded call's input through ``experts[name]``; rel. L2 difference per call from
    the recorded prediction."""
    return [rel_err(experts[name](**kwargs | {"return_dict": False})[0], pred) for name, kwargs, pred in calls]


def check_expert_schedule(calls, boundary: float = 0.875) -> None:
    """Each call went to the expert serving its timestep (high-noise iff t >= boundary·1000, diffusers' and
    lightx2v's rule), and both CFG branches of a step to the same expert."""
    names = [(name, float(kw["timestep"].max())) for name, kw, _ in calls]
    assert all((t >= boundary * 1000) == (name == "transformer") for name, t in names), names
    assert names[0::2] == names[1::2], names  # cond, uncond
    assert {name for name, _ in names} == {"transformer", "transformer_2"}, names


def twins(pipe) -> dict:
    """The fake-quant twin of each runtime expert: LLMC's fake-quant linears rebuilt from the loaded checkpoint's
    codes and scales (identical arithmetic to the fake-quant model, so any difference is the checkpoint's)."""
    from vidquant.runtime.model import fake_quant_twin

    return {e.name: fake_quant_twin(getattr(pipe, e.name)) for e in pipeline_experts(pipe)}


@torch.no_grad()
def per_layer_rel_err(expert, twin, kwargs: dict) -> float:
    """Teacher-forced per layer: the largest rel. L2 difference between each W8A8 linear of ``expert`` and the
    twin's fake-quant linear on the input the runtime feeds it."""
    seen = {}
    handles = [m.register_forward_pre_hook(lambda m, a, name=name: seen.setdefault(name, a[0]))
               for name, m in expert.named_modules() if isinstance(m, W8A8Linear)]
    try:
        expert(**kwargs | {"return_dict": False})
    finally:
        for h in handles:
            h.remove()
    fake = dict(twin.named_modules())
    assert len(seen) == 10 * len(expert.blocks)
    return max(rel_err(expert.get_submodule(n)(x), fake[n](x)) for n, x in seen.items())


def _export_to_runtime(tmp_path: Path, model: Path, result, scheme: str):
    """The converter (-d backward) on each expert, verify, the MoE JSON, and the runtime pipeline."""
    conv = convert_experts(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                           copy_no_weight_files=True)
    problems = verify_experts(conv)
    assert problems == {"high_noise_model": [], "low_noise_model": []}, problems
    moe_json = tmp_path / "wan_moe_advanced_ptq.json"
    write_lightx2v_moe_config(moe_json, task="t2v", scheme=scheme, boundary=0.875, guidance_scale=5.0,
                              quantized_ckpts={"high_noise_model": conv / "high_noise_model",
                                               "low_noise_model": conv / "low_noise_model"},
                              infer_steps=4, target_height=32, target_width=32, target_video_length=5, seed=42)
    pipe = load_quantized_moe_pipeline(model, {"transformer": conv / "high_noise_model",
                                               "transformer_2": conv / "low_noise_model"}, "cpu", torch.float32)
    return pipe, moe_json


def _check_clips(clips, record_property, min_vs_fake: float = 40.0, min_vs_float: float = 25.0) -> None:
    for rt, fake, ref in clips:
        assert np.isfinite(rt).all() and rt.shape == ref.shape
        p_fake, p_float = psnr(rt, fake), psnr(rt, ref)
        record_property("psnr_runtime_vs_fake", p_fake)
        record_property("psnr_runtime_vs_float", p_float)
        assert p_fake >= min_vs_fake, p_fake
        assert math.isfinite(p_float) and p_float > min_vs_float, p_float


@pytest.mark.parametrize("method,fmt", [("SmoothQuant", "int8"), ("GPTQ", "fp8")])
def test_moe_quantize_export_convert_verify_runtime(wan22_dirs, tmp_path, method, fmt, record_property,
                                                    quantize_keeping_pipe):
    model = wan22_dirs["t2v_moe"]
    special = {"alpha": 0.75} if method == "SmoothQuant" else {}
    result, fake = quantize_keeping_pipe(_config(tmp_path, model, "Wan22T2V", method, fmt, **special),
                                         tmp_path / "run")
    # per-expert metrics: every table has an expert column with both experts
    for name in ("layer_metrics", "timestep_metrics"):
        df = pd.read_csv(tmp_path / "run" / f"{name}.csv")
        assert set(df["expert"]) == {"transformer", "transformer_2"}, name
    tm = result.timestep_metrics
    assert (tm.loc[tm["expert"] == "transformer", "timestep"] >= 875).all()
    assert (tm.loc[tm["expert"] == "transformer_2", "timestep"] < 875).all()
    assert set(result.summary["experts"]) == {"transformer", "transformer_2"}
    # each expert calibrated on its own statistics: smoothing factors (SmoothQuant) / weight grids (GPTQ) differ
    decided = [result.experts[n].smooth or result.experts[n].weight_qparams for n in ("transformer", "transformer_2")]
    key = sorted(decided[0])[0]
    first = [d[key][0] if isinstance(d[key], tuple) else d[key] for d in decided]
    assert first[0].shape == first[1].shape and not torch.equal(*first), key
    assert sorted(p.name for p in result.export_dir.iterdir()) == ["high_noise_model", "low_noise_model"]
    pipe, moe_json = _export_to_runtime(tmp_path, model, result, fmt)
    for name in ("transformer", "transformer_2"):
        assert sum(isinstance(m, W8A8Linear) for m in getattr(pipe, name).modules()) == 2 * 10
    # teacher-forced, every call of a fake-quant generation (both experts, both CFG branches): the twin rebuilt
    # from each converted checkpoint IS that expert's fake-quant model, and the real GEMMs agree with it as
    # Wan2.1's do (tests/test_runtime.py: <= 1e-4 on 2-block models)
    ev, samples = load_eval_samples(result.config)[0]
    calls = expert_calls(fake, samples[0], GenParams.from_section(ev, 42))
    check_expert_schedule(calls)
    exact = replay(twins(pipe), calls)
    assert max(exact) == 0.0, exact
    runtime = replay({n: getattr(pipe, n) for n in ("transformer", "transformer_2")}, calls)
    record_property("max_rel_err_runtime_vs_fake", max(runtime))
    assert max(runtime) <= 1e-4, runtime
    seen = expert_calls(pipe, samples[0], GenParams.from_section(ev, 42))  # the runtime switches at the same steps
    assert [(n, float(kw["timestep"].max())) for n, kw, _ in seen] == [
        (n, float(kw["timestep"].max())) for n, kw, _ in calls]
    _check_clips(_runtime_clips(result, pipe), record_property)
    cfg, moe = read_moe_config(json.loads(moe_json.read_text()))
    assert cfg["quant_scheme"] == fmt and moe["boundary"] == 0.875


def test_ti2v_quantize_export_runtime(wan22_dirs, tmp_path, record_property):
    """TI2V-5B: one transformer, per-token timesteps (4-D temb) through calibration, export and runtime."""
    from vidquant.export.converter import convert
    from vidquant.runtime import load_quantized_pipeline

    model = wan22_dirs["ti2v"]
    result = quantize(_config(tmp_path, model, "Wan22TI2V", "SmoothQuant", "int8", alpha=0.75), progress=False,
                      out_dir=tmp_path / "run")
    assert "expert" not in result.layer_metrics  # a dense model's tables are as Wan2.1's
    conv = convert(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                   copy_no_weight_files=True)
    pipe = load_quantized_pipeline(model, conv, "cpu", torch.float32)
    assert pipe.config.expand_timesteps
    _check_clips(_runtime_clips(result, pipe), record_property)


def test_ti2v_calibrates_and_runs_in_its_image_conditioned_mode(wan22_dirs, tmp_path, record_property,
                                                               quantize_keeping_pipe):
    """TI2V-5B's image-to-video mode (calib.name / eval.name i2v): the folder runs as diffusers'
    WanImageToVideoPipeline, the first latent frame is the encoded image with its tokens at timestep 0, and
    calibration sees exactly that: every captured call has the first frame's tokens at 0, the rest at t."""
    from diffusers import WanImageToVideoPipeline

    from vidquant.export.converter import convert
    from vidquant.runtime.model import load_quantized_transformer

    model = wan22_dirs["ti2v"]
    cfg = _config(tmp_path, model, "Wan22TI2V", "SmoothQuant", "int8", task="i2v", alpha=0.75)
    assert cfg.task == "i2v"
    pipe = load_pipeline(model, "Wan22TI2V", "float32", task="i2v")
    assert isinstance(pipe, WanImageToVideoPipeline) and pipe.config.expand_timesteps
    data = capture_expert_inputs(pipe, load_samples(REPO / cfg.calib.path, "i2v")[:1],
                                 GenParams.from_section(cfg.calib, 42), sample_steps=2, progress=False)["transformer"]
    first_frame = data.denoiser_inputs[0]["hidden_states"][0, 0, 0].numel() // 4  # tokens of one latent frame
    for inputs, meta in zip(data.denoiser_inputs, data.meta):
        ts = inputs["timestep"][0]
        assert (ts[:first_frame] == 0).all() and (ts[first_frame:] == meta["timestep"]).all() and meta["timestep"] > 0
    with pytest.raises(ModelLoadError, match=r"^\S+: a T2V checkpoint \(WanPipeline\) cannot run as 'i2v'; only"):
        load_pipeline(wan22_dirs["t2v_moe"], task="i2v")

    result, fake = quantize_keeping_pipe(cfg, tmp_path / "run")
    assert isinstance(fake, WanImageToVideoPipeline)
    conv = convert(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                   copy_no_weight_files=True)
    quantized = load_quantized_transformer(conv, model / "transformer", "cpu", torch.float32)
    runtime = load_pipeline(model, None, "float32", components={"transformer": quantized}, task="i2v")
    _check_clips(_runtime_clips(result, runtime), record_property)


def test_infer_cli_runs_the_moe_json(wan22_dirs, tmp_path, capsys):
    model = wan22_dirs["t2v_moe"]
    result = quantize(_config(tmp_path, model, "Wan22T2V", "RTN", "int8"), progress=False, out_dir=tmp_path / "run")
    _, moe_json = _export_to_runtime(tmp_path, model, result, "int8")
    video = tmp_path / "out.mp4"
    argv = ["--model_cls", "wan2.2_moe", "--task", "t2v", "--model_path", str(model), "--config_json",
            str(moe_json), "--prompt", PROMPT, "--save_video_path", str(video), "--device", "cpu"]
    assert infer_main(argv) == 0 and video.is_file()
    assert "boundary 0.875" in capsys.readouterr().out
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(json.loads(moe_json.read_text()) | {"boundary": 0.9, "infer_steps": 2}))
    with pytest.warns(UserWarning, match="boundary 0.9 differs from .* boundary_ratio 0.875"):
        assert infer_main(argv[:7] + [str(shifted)] + argv[8:]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({k: v for k, v in json.loads(moe_json.read_text()).items() if k != "boundary"}))
    assert infer_main(argv[:7] + [str(bad)] + argv[8:]) == 2
    assert "field 'boundary'" in capsys.readouterr().err
    assert infer_main(["--model_cls", "wan2.2_moe"] + argv[2:5] + [str(wan22_dirs["ti2v"])] + argv[6:]) == 2
    assert "has one transformer; use --model_cls wan2.2" in capsys.readouterr().err


def test_infer_cli_runs_quantized_ti2v_image_conditioned_with_the_wan22_vae(tmp_path, monkeypatch, capsys,
                                                                          record_property):
    """TI2V-5B through lightx2v's command line (`--model_cls wan2.2 --task i2v`, as its run_wan22_ti2v_i2v.sh):
    a test-size TI2V with the Wan2.2 VAE (z_dim 48, 16x spatial) calibrated image-conditioned -> export ->
    convert -> verify -> `vidquant infer`, whose clip is the fake-quant clip `quantize` evaluated (same prompt,
    image, seed, sampler; the Wan2.1 / random-model bounds: >= 40 dB vs fake-quant, > 25 dB vs float)."""
    from vidquant.export.converter import convert
    from vidquant.export.lightx2v_config import write_lightx2v_config
    from vidquant.export.verify import verify
    from vidquant.models.tiny import make_random_tiny_wan22_dir

    model = make_random_tiny_wan22_dir("ti2v", tmp_path / "ti2v", wan22_vae=True)
    raw = tiny_config(tmp_path, model, "i2v", method="SmoothQuant")
    raw["model"]["type"] = "Wan22TI2V"
    for section in ("calib", "eval"):  # 64x64: 2x2 tokens per latent frame through the 16x VAE
        raw[section] |= {"path": str(REPO / raw[section]["path"]), "target_height": 64, "target_width": 64}
    raw["eval"]["num_samples"] = 1
    raw["quant"]["video_gen"]["special"] = {"alpha": 0.75}
    result = quantize(parse_config(raw, source=str(tmp_path / "cfg.yaml")), progress=False, out_dir=tmp_path / "run")
    conv = convert(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                   copy_no_weight_files=True)
    assert verify(conv) == []
    (ev, samples), = load_eval_samples(result.config)
    ref, fake = result.videos[(ev.path, 0)]
    config = tmp_path / "wan_ti2v_i2v_advanced_ptq.json"
    written = write_lightx2v_config(config, task="i2v", scheme="int8", quantized_ckpt=conv,
                                    infer_steps=ev.num_inference_steps, target_height=64, target_width=64,
                                    target_video_length=ev.num_frames, guidance_scale=ev.guidance_scale,
                                    seed=result.config.base.seed)
    ti2v_fields = {"num_channels_latents": 48, "vae_stride": [4, 16, 16], "use_image_encoder": False}  # lightx2v's
    config.write_text(json.dumps(written | ti2v_fields | {"text_len": ev.max_sequence_length}))
    argv = ["--model_cls", "wan2.2", "--task", "i2v", "--model_path", str(model), "--config_json", str(config),
            "--prompt", samples[0].prompt, "--negative_prompt", samples[0].negative_prompt or "",
            "--image_path", str(samples[0].image), "--save_result_path", str(tmp_path / "out.mp4"),  # as lightx2v's
            "--device", "cpu", "--dtype", "float32", "--numerics", "vidquant"]
    clip = infer_clip(argv, monkeypatch)
    assert "vidquant infer: i2v int8 W8A8 from" in capsys.readouterr().out
    assert clip.shape == fake.shape == (ev.num_frames, 64, 64, 3)
    _check_clips([(clip, fake, ref)], record_property)
    assert psnr(clip, fake) > psnr(clip, ref)  # the quantized transformer ran (random model: 142 vs 76 dB)
    with capsys.disabled():
        print(f"\n[ti2v i2v int8] infer vs fake-quant {psnr(clip, fake):.1f} dB, vs float {psnr(clip, ref):.1f} dB")
    # what cannot run is refused up front, naming the fix
    other = tmp_path / "other.json"
    for bad, message in ((["--model_cls", "wan2.1"], r"is a Wan2.2 TI2V-5B-style model \(expand_timesteps\); use "
                                                    "--model_cls wan2.2$"),
                         ({"num_channels_latents": 16}, "field 'num_channels_latents' is 16 but the VAE of"),
                         ({"vae_stride": [4, 8, 8]}, r"field 'vae_stride' is \[4, 8, 8\] but .* gives \[4, 16, 16\]")):
        args = list(argv)
        if isinstance(bad, dict):
            other.write_text(json.dumps(json.loads(config.read_text()) | bad))
            args[args.index(str(config))] = str(other)
        else:
            args[:2] = bad
        assert infer_main(args) == 2
        assert re.search(message, capsys.readouterr().err.strip()), message


def test_moe_config_reader_checks_fields():
    base = {"infer_steps": 4, "target_height": 32, "target_width": 32, "boundary": 0.9,
            "sample_guide_scale": [3.5, 3.0], "high_noise_quantized_ckpt": "h", "low_noise_quantized_ckpt": "l"}
    _, moe = read_moe_config(base)
    assert moe == {"ckpts": {"transformer": "h", "transformer_2": "l"}, "boundary": 0.9, "guidance": (3.5, 3.0)}
    for field, value, message in (("boundary", 1.5, "'boundary'"), ("sample_guide_scale", [1, 2, 3], "pair"),
                                  ("low_noise_quantized_ckpt", 3, "'low_noise_quantized_ckpt'")):
        with pytest.raises(ConfigError, match=message):
            read_moe_config(base | {field: value})


# ----------------------------------------------------------------------------------------------- black clips


@pytest.fixture(scope="module")
def moe_runtime(wan22_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moe_rt")
    model = wan22_dirs["t2v_moe"]
    result = quantize(_config(tmp, model, "Wan22T2V", "RTN", "int8"), progress=False, out_dir=tmp / "run")
    conv = convert_experts(result.export_dir, tmp / "converted", direction="backward", progress=False,
                           copy_no_weight_files=True)
    return model, {"transformer": conv / "high_noise_model", "transformer_2": conv / "low_noise_model"}


def _clip(pipe) -> np.ndarray:
    from vidquant.calib.samples import Sample

    return generate_video(pipe, Sample(PROMPT), GenParams(32, 32, 5, 5.0, 6, 42, 16))


@pytest.mark.parametrize("expert,label,poison", [
    ("transformer", r"transformer \(high-noise expert\) returned \d+ non-finite", "nan"),
    ("transformer_2", r"transformer_2 \(low-noise expert\) returned \d+ non-finite", "inf_scale"),
    ("transformer_2", r"transformer_2 \(low-noise expert\) returned a constant prediction", "dead"),
])
def test_black_clip_failure_is_detected_and_names_the_expert(moe_runtime, expert, label, poison):
    """The reported failure (all-black clips from quantized A14B): a non-finite or constant prediction from either
    expert stops generation with the expert, the call and the timestep named, instead of decoding a black clip."""
    model, ckpts = moe_runtime
    pipe = load_quantized_moe_pipeline(model, ckpts, "cpu", torch.float32)
    healthy = _clip(pipe)  # the guard is silent on a healthy mixture
    assert np.isfinite(healthy).all() and healthy.std() > 0
    target = getattr(pipe, expert)
    with torch.no_grad():
        if poison == "nan":
            target.blocks[0].ffn.net[2].bias.fill_(float("nan"))
        elif poison == "inf_scale":  # an overflowed weight scale in the quantized checkpoint
            target.blocks[-1].attn1.to_out[0].weight_scale.fill_(float("inf"))
        else:  # a dead expert: the output head gives zeros
            target.proj_out.weight.zero_()
            target.proj_out.bias.zero_()
    with pytest.raises(ExpertOutputError, match=label) as err:
        _clip(pipe)
    t = float(str(err.value).split("timestep ")[1].split(")")[0])
    assert (t >= 875) == (expert == "transformer")


# ----------------------------------------------------------------------------------------------- training


def _pool(n: int = 4):
    from vidquant.train.wan22 import T2VPool

    gen = torch.Generator().manual_seed(0)
    return T2VPool(torch.randn(n, 4, 3, 4, 4, generator=gen), torch.zeros(n, dtype=torch.long),
                   {16: torch.randn(2, 16, 8, generator=gen), 512: torch.randn(2, 512, 8, generator=gen)})


def test_expert_batches_stay_in_their_noise_range():
    from vidquant.train.wan22 import Wan22TrainConfig, expert_batch, expert_time_range

    cfg = Wan22TrainConfig(batch=64)
    for expert in ("high", "low"):
        lo, hi = expert_time_range(expert, 0.875)
        kwargs, target, mask = expert_batch(_pool(), cfg, torch.Generator().manual_seed(1), (lo, hi))
        t = kwargs["timestep"] / 1000
        assert ((t >= lo) & (t <= hi)).all() and mask is None
        assert (t >= 0.875).all() if expert == "high" else (t <= 0.875).all()


def test_ti2v_batch_uses_the_pipelines_per_token_timesteps():
    """Image samples: first latent frame clean, its tokens at timestep 0, in the pipelines' token order
    (``mask[0][0][:, ::2, ::2] * t`` flattened)."""
    from vidquant.train.wan22 import Wan22TrainConfig, ti2v_batch

    pool = _pool()
    for frac, image in ((1.0, True), (0.0, False)):
        cfg = Wan22TrainConfig(batch=4, ti2v_image_frac=frac)
        kwargs, target, keep = ti2v_batch(pool, cfg, torch.Generator().manual_seed(2), (1, 2, 2))
        ts = kwargs["timestep"]
        assert ts.shape == (4, 3 * 2 * 2)
        mask = torch.ones(3, 4, 4)
        if image:
            mask[0] = 0
        t = ts.amax(dim=1)
        expected = (mask[:, ::2, ::2].flatten()[None] * t[:, None])
        assert torch.equal(ts, expected)
        first = kwargs["hidden_states"][:, :, 0]
        is_clean = [any(torch.equal(f, x0) for x0 in pool.latents[:, :, 0]) for f in first]
        assert is_clean == [image] * 4
        assert (keep[:, :, 0] == (0 if image else 1)).all() and (keep[:, :, 1:] == 1).all()


# ----------------------------------------------------------------------------------------------- configs


def test_shipped_wan22_configs_load_and_point_at_wan22_layouts(tmp_path):
    folders = {"wan22_t2v": "Wan22T2V", "wan22_i2v": "Wan22I2V", "wan22_ti2v": "Wan22TI2V",
               "tiny_wan22_t2v": "Wan22T2V", "tiny_wan22_ti2v": "Wan22TI2V"}
    for folder, model_type in folders.items():
        files = sorted((REPO / "configs/quantization/video_gen" / folder).glob("*.yaml"))
        assert len(files) == 6, folder
        for f in files:
            cfg = load_config(f)
            assert cfg.model.type == model_type
            assert cfg.task == ("i2v" if model_type == "Wan22I2V" else "t2v")
            if folder.startswith("tiny"):
                assert inspect_checkpoint(REPO / cfg.model.path).model_type == model_type
    for path in sorted((REPO / "configs/lightx2v").glob("*wan22_moe*.json")):
        cfg, moe = read_moe_config(json.loads(path.read_text()), source=str(path))
        assert cfg["quant_method"] == "advanced_ptq" and cfg["quant_scheme"] == "int8"
        assert moe["boundary"] in (0.875, 0.9) and all(p.endswith("_noise_model") for p in moe["ckpts"].values())
    # TI2V (--model_cls wan2.2): the latent layout each JSON states is its model's VAE (TI2V-5B's 48 channels, 16x;
    # the shipped tiny TI2V's 16, 8x), and `vidquant infer` refuses it on the other
    from vidquant.models.tiny import make_random_tiny_wan22_dir
    from vidquant.runtime.infer import InferError, _check_latent_layout

    layouts = {"tiny_wan22_ti2v": REPO / "assets/models/tiny-wan22-ti2v",
               "wan22_ti2v": make_random_tiny_wan22_dir("ti2v", tmp_path / "ti2v48", wan22_vae=True)}
    paths = sorted((REPO / "configs/lightx2v").glob("*wan22_ti2v*.json"))
    assert [p.name for p in paths] == ["tiny_wan22_ti2v_i2v_advanced_ptq.json", "wan22_ti2v_i2v_advanced_ptq.json",
                                       "wan22_ti2v_t2v_advanced_ptq.json"]
    for path in paths:
        cfg = read_lightx2v_config(path)
        assert cfg["quant_scheme"] == "int8" and cfg["use_image_encoder"] is False
        own = next(model for prefix, model in layouts.items() if path.name.startswith(prefix))
        _check_latent_layout(cfg, own, str(path))
        other = next(model for model in layouts.values() if model != own)
        with pytest.raises(InferError, match="field 'num_channels_latents' is"):
            _check_latent_layout(cfg, other, str(path))


@pytest.mark.parametrize("folder,kind", [("wan22_t2v", "t2v_moe"), ("wan22_i2v", "i2v_moe"), ("wan22_ti2v", "ti2v")])
def test_real_checkpoint_configs_pass_every_check_on_their_layout(wan22_dirs, tmp_path, folder, kind):
    """The configs for real checkpoints (model.path a placeholder for the local Wan-AI/Wan2.2-*-Diffusers folder):
    with model.path pointed at a directory of that layout, every check `vidquant quantize` makes before loading
    (`run.prepare`: checkpoint, model.type, samples, quantizers, exportability, outputs) passes; on the other
    Wan2.2 layouts it is refused, naming the model.type to set."""
    from vidquant.run import prepare

    for f in sorted((REPO / "configs/quantization/video_gen" / folder).glob("*.yaml")):
        outputs = {"save.save_path": str(tmp_path / f.stem), "eval.output_video_path": str(tmp_path / f.stem / "v")}
        assert "/path/to/Wan2.2-" in load_config(f).model.path
        for other, path in wan22_dirs.items():
            cfg = load_config(f, outputs | {"model.path": str(path), "model.device": "cpu"})
            if other == kind:
                checks = prepare(cfg)
                assert checks["checkpoint"].model_type == cfg.model.type, f
                samples = [*checks.get("calib_samples", []), *checks["eval_samples"][0]]
                assert all((s.image is not None) == (kind == "i2v_moe") for s in samples), f
            else:
                with pytest.raises(ModelLoadError, match=f"set model.type: {TYPES[other]}"):
                    prepare(cfg)


# ----------------------------------------------------------------------------------------------- shipped models

SHIPPED = {"Wan22T2V": REPO / "configs/quantization/video_gen/tiny_wan22_t2v",
           "Wan22TI2V": REPO / "configs/quantization/video_gen/tiny_wan22_ti2v"}
RECIPES = ["rtn_w_a", "smoothquant_w_a", "smoothquant_w_a_fp8", "awq_w_a", "gptq_w_a", "smoothquant_gptq_w_a"]


def _shipped(tmp_path: Path, model_type: str, recipe: str, fmt: str, **extra) -> Config:
    """A shipped tiny Wan2.2 config (64×64, 9 frames, 20 steps, 8 calls per prompt and expert), 2 eval prompts."""
    overrides = {"eval.num_samples": 2, "save.save_path": str(tmp_path / "run"),
                 "eval.output_video_path": str(tmp_path / "videos"), **extra}
    if fmt == "fp8" and not recipe.endswith("fp8"):
        overrides.update({f"quant.video_gen.{w}.{k}": v for w in ("weight", "act")
                          for k, v in (("quant_type", "float-quant"), ("bit", "e4m3"))})
    return load_config(SHIPPED[model_type] / f"{recipe}.yaml", overrides)


@torch.no_grad()
def _nudged(calls) -> list[tuple[str, dict, torch.Tensor]]:
    """The calls with their latent input one ulp up (the noise floor's nudge, vidquant.eval.noise)."""
    up = lambda x: torch.nextafter(x, torch.full_like(x, float("inf")))  # noqa: E731
    return [(name, kwargs | {"hidden_states": up(kwargs["hidden_states"])}, pred) for name, kwargs, pred in calls]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", [r for r in RECIPES if not r.endswith("fp8")])
def test_shipped_tiny_wan22_t2v_runtime_is_the_fake_quant_model(tmp_path, recipe, fmt, record_property,
                                                                 quantize_keeping_pipe):
    """The trained mixture, every recipe, int8 and fp8, the runtime with the fake-quant numerics ("vidquant"
    activation division, fp32 weight scales). See the module docstring for the bounds and the numbers."""
    cfg = _shipped(tmp_path, "Wan22T2V", recipe, fmt)
    model = REPO / cfg.model.path
    result, fake = quantize_keeping_pipe(cfg, tmp_path / "run")
    pipe, _ = _export_to_runtime(tmp_path, model, result, fmt)
    experts, twin = {n: getattr(pipe, n) for n in ("transformer", "transformer_2")}, twins(pipe)
    (ev, samples), = load_eval_samples(cfg)
    params = GenParams.from_section(ev, cfg.base.seed)
    calls = expert_calls(fake, samples[0], params)
    check_expert_schedule(calls)
    # 1. each converted checkpoint holds exactly its expert's fake-quant model (weights, scales, smoothing)
    exact = replay(twin, calls)
    assert max(exact) == 0.0, exact
    # 2. per layer, teacher-forced: the real GEMM is the fake-quant linear up to fp32 rounding
    for name, kwargs, _ in calls[::10]:
        assert per_layer_rel_err(experts[name], twin[name], kwargs) <= 1e-5, name
    # 3. whole denoiser, one step: the rounding differences flip activation codes, which cascade through the
    #    6 blocks; the fake-quant model does the same to itself when its latent moves by one ulp
    runtime, nudged = replay(experts, calls), replay({n: getattr(fake, n) for n in experts}, _nudged(calls))
    record_property("max_rel_err_runtime_vs_fake", max(runtime))
    record_property("max_rel_err_fake_nudged_vs_fake", max(nudged))
    assert max(runtime) <= 2 * max(nudged), (max(runtime), max(nudged))
    # 4. end to end: the twin pipeline redraws quantize's fake-quant clips bit for bit. The real-GEMM runtime's
    #    clips are one draw of a chaotic spread: the fake-quant model's own one-ulp-nudged clips land 23-47 dB
    #    from its clips, the runtime's 26-49 dB (module docstring); 20 dB is the floor below that spread
    clips = [generate_video(pipe, s, params) for s in samples]
    pipe.transformer, pipe.transformer_2 = twin["transformer"], twin["transformer_2"]
    for i, (sample, clip) in enumerate(zip(samples, clips)):
        ref, fake_clip = result.videos[(ev.path, i)]
        assert np.array_equal(generate_video(pipe, sample, params), fake_clip)
        record_property(f"psnr_runtime_vs_fake_{i}", psnr(clip, fake_clip))
        assert psnr(clip, fake_clip) >= 20.0, i
        assert psnr(clip, ref) > 25.0  # as Wan2.1's runtime test against the float clip


@pytest.mark.slow
@pytest.mark.parametrize("task,fmt", [("t2v", "int8"), ("t2v", "fp8"), ("i2v", "int8")])
def test_shipped_tiny_wan22_ti2v(tmp_path, task, fmt, record_property, quantize_keeping_pipe):
    """The trained TI2V (one transformer, per-token timesteps), checked as the trained mixture above: its
    quantized generation is as chaotic. The fake-quant model's own one-ulp-nudged clips land 32.2-66.2 dB from
    its clips (t2v fp8: 32.2 and 45.4 dB, where the runtime's are 40.3 and 40.9 dB), so a 40 dB bound on the
    runtime's clip held by luck; the twin's clips are the fake-quant clips bit for bit."""
    from vidquant.export.converter import convert
    from vidquant.runtime.model import load_quantized_transformer

    # i2v: the image-conditioned mode of the same model, on the tiny I2V sets (their images)
    image_mode = {f"{s}.{k}": v for s in ("calib", "eval")
                  for k, v in (("name", "i2v"), ("path", f"assets/{s}/tiny_i2v"))}
    cfg = _shipped(tmp_path, "Wan22TI2V", "smoothquant_w_a", fmt, **(image_mode if task == "i2v" else {}))
    assert cfg.task == task
    model = REPO / cfg.model.path
    result, fake = quantize_keeping_pipe(cfg, tmp_path / "run")
    conv = convert(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                   copy_no_weight_files=True)
    quantized = load_quantized_transformer(conv, model / "transformer", "cpu", torch.float32)
    pipe = load_pipeline(model, None, "float32", components={"transformer": quantized}, task=task)
    (ev, samples), = load_eval_samples(cfg)
    params = GenParams.from_section(ev, cfg.base.seed)
    calls = expert_calls(fake, samples[0], params)
    twin = twins(pipe)
    assert max(replay(twin, calls)) == 0.0  # the checkpoint holds exactly the fake-quant model
    for _, kwargs, _ in calls[::10]:  # per layer: the real GEMM is the fake-quant linear up to fp32 rounding
        assert per_layer_rel_err(quantized, twin["transformer"], kwargs) <= 1e-5
    runtime = replay({"transformer": quantized}, calls)
    nudged = replay({"transformer": fake.transformer}, _nudged(calls))
    record_property("max_rel_err_runtime_vs_fake", max(runtime))
    record_property("max_rel_err_fake_nudged_vs_fake", max(nudged))
    assert max(runtime) <= 2 * max(nudged), (max(runtime), max(nudged))
    clips = [generate_video(pipe, s, params) for s in samples]
    pipe.transformer = twin["transformer"]
    for i, (sample, clip) in enumerate(zip(samples, clips)):
        ref, fake_clip = result.videos[(ev.path, i)]
        assert np.array_equal(generate_video(pipe, sample, params), fake_clip)
        record_property(f"psnr_runtime_vs_fake_{i}", psnr(clip, fake_clip))
        record_property(f"psnr_runtime_vs_float_{i}", psnr(clip, ref))
        assert psnr(clip, fake_clip) >= 20.0, i  # the trained models' end-to-end floor (module docstring)
        assert psnr(clip, ref) > 25.0


@pytest.mark.slow
def test_notebook_10_executes(wan22_dirs, tmp_path, monkeypatch):
    import papermill

    from vidquant.records import read_metrics

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = {"model_path": str(wan22_dirs["t2v_moe"]), "output_dir": str(tmp_path), "num_inference_steps": 4,
              "sample_steps": 2, "height": 32, "width": 32, "num_frames": 5, "num_eval_samples": 1}
    papermill.execute_notebook(str(REPO / "notebooks/10_wan22.ipynb"), str(tmp_path / "10_wan22.ipynb"),
                               parameters=params, kernel_name="python3", progress_bar=False,
                               cwd=str(REPO / "notebooks"))
    metrics = read_metrics(tmp_path / "metrics.json")
    assert metrics["verify_problems"] == 0
    assert {"experts.transformer.mean_sqnr_db", "experts.transformer_2.mean_sqnr_db",
            "runtime.psnr_vs_fake_quant"} <= set(metrics)
