"""Every method × every exported format on the shipped tiny Wan2.2 mixture (`assets/models/tiny-wan22-t2v`):
quantize → export (both experts) → convert (-d backward) → verify → the MoE runtime, with a small generation
(32×32, 5 frames, 4 steps, 2 calibration calls per expert and prompt). One case runs by default (on a random
test-size mixture of the same layout, for speed); the grid (5 methods × 8 formats, `vidquant.tables`' METHODS ×
EXPORTED) is marked slow.

What is checked: both expert folders export, convert and verify; each runtime expert loads the format's linears
and they decode to that expert's own fake-quant weights and biases (a swapped or mixed-up expert fails here);
teacher-forced on every expert call of one fake-quant generation (both experts, both CFG branches, each at the
expert serving its timestep), the runtime expert against the fake-quant expert `quantize` evaluated, within a
per-format fraction of that expert's quantization error (`SAME_FUNCTION` below, with the measured values); the
runtime's guarded clip is finite and within `MIN_CLIP_PSNR` of the fake-quant clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_wan22 import check_expert_schedule, expert_calls, keeping_pipe, rel_err

from vidquant.eval.metrics import psnr
from vidquant.export.experts import EXPERT_DIRS, convert_experts, verify_experts
from vidquant.generate import GenParams, generate_video
from vidquant.models import load_pipeline
from vidquant.models.tiny import make_random_tiny_wan22_dir
from vidquant.quant import FakeQuantLinear, W8A8Linear
from vidquant.run import load_eval_samples, quantize
from vidquant.runtime.emulated import EmulatedLinear
from vidquant.runtime.moe import load_quantized_moe_pipeline
from vidquant.tables import EXPORTED, METHODS, cell_config

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "assets/models/tiny-wan22-t2v"
SCHEMES = {"W8A8-int8": "int8", "FP8-e4m3": "fp8", "MXFP8": "mxfp8", "MXFP6-MXFP8": "mxfp6-mxfp8", "MXFP4": "mxfp4",
           "NVFP4": "nvfp4", "W4A16-g128": "int4-g128-marlin", "FP8-pertensor": "fp8-pertensor"}
# Teacher-forced bound per call on |runtime - fake|, as a fraction of the fake-quant expert's own error against
# float (measured max over the 5 methods in brackets). MX, FP8-pertensor: the same quantizers, emulated, and for
# FP8-pertensor the same calibrated static activation scale (the fake-quant model uses the exported input_absmax
# since b594a83, docs/formats.md "Static activation scales"): bit-exact (0). NVFP4: the same, bit-exact after RTN,
# SmoothQuant, AWQ; GPTQ keeps a weight code·(s8/g) with the scale quotient rounded once where the export decodes
# code·s8/g, up to one fp32 ulp per weight (measured in 25-40 % of the weights), (3.1e-6). W4A16: Marlin's fp16
# group scales (0.124); W8A8: real GEMMs whose fp32 rounding flips activation codes that cascade through the 6
# blocks (1.10; a swapped expert: ~20).
SAME_FUNCTION = {"W8A8-int8": 1.5, "FP8-e4m3": 1.5, "MXFP8": 1e-6, "MXFP6-MXFP8": 1e-6, "MXFP4": 1e-6,
                 "NVFP4": 1e-5, "FP8-pertensor": 1e-6, "W4A16-g128": 0.25}
# The clip against the fake-quant clip (PSNR, dB; 32×32, 5 frames, 4 steps, measured min in brackets): the
# emulated formats that compute the fake-quant function, Wan2.1's 60 dB (tests/test_formats_infer.py; inf);
# W4A16 (weight-only: no activation code to flip) Wan2.1's 40 dB (60.3); W8A8, whose code flips cascade over the
# steps (chaotic, docs/wan22.md "Runtime vs fake-quant"), the trained mixture's 20 dB floor (23.6).
MIN_CLIP_PSNR = {"W8A8-int8": 20.0, "FP8-e4m3": 20.0, "MXFP8": 60.0, "MXFP6-MXFP8": 60.0, "MXFP4": 60.0,
                 "NVFP4": 60.0, "FP8-pertensor": 60.0, "W4A16-g128": 40.0}
FAST_CASE = ("SmoothQuant", "NVFP4")
GEN = {"num_inference_steps": 4, "target_height": 32, "target_width": 32, "num_frames": 5}
SMALL = {**{f"calib.{k}": v for k, v in GEN.items()}, "calib.sample_steps": 2, "eval.num_samples": 1,
         **{f"eval.{k}": v for k, v in GEN.items()}, "eval.eval_pos": ["fake_quant"]}


def _cases():
    assert set(SCHEMES) == EXPORTED  # a new exported format joins the grid here
    for method in METHODS:
        for fmt in SCHEMES:
            marks = [] if (method, fmt) == FAST_CASE else [pytest.mark.slow]
            yield pytest.param(method, fmt, marks=marks, id=f"{method}-{fmt}")


def assert_same_weights(runtime, fake, fmt: str) -> None:
    """Every block linear of the runtime expert decodes to the fake-quant expert's weight (exactly, up to one fp32
    rounding of the scale product; W4A16: Marlin's fp16 group scales, 2^-11) and has its bias."""
    tol = 2.0**-10 if fmt == "W4A16-g128" else 1e-6
    fakes = {n: m for n, m in fake.named_modules() if isinstance(m, FakeQuantLinear)}
    decoded = {n: m.dequantized_weight() if isinstance(m, W8A8Linear) else m.weight
               for n, m in runtime.named_modules() if isinstance(m, W8A8Linear | EmulatedLinear)}
    assert decoded.keys() == fakes.keys()
    for n, w in decoded.items():
        want = fakes[n].weight.float()
        assert float((w - want).abs().max()) <= tol * float(want.abs().max()), n
        assert torch.equal(runtime.get_submodule(n).bias.float(), fakes[n].bias.float()), n


@pytest.fixture
def quantize_keeping_pipe(monkeypatch):
    return keeping_pipe(monkeypatch)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_tiny_wan22_dir("t2v_moe", tmp_path_factory.mktemp("wan22") / "t2v_moe")


@torch.no_grad()
@pytest.mark.parametrize("method,fmt", list(_cases()))
def test_every_method_and_format_through_the_moe_chain(tmp_path, monkeypatch, method, fmt, random_model,
                                                       quantize_keeping_pipe, record_property):
    monkeypatch.chdir(REPO)  # cell_config reads the shipped tiny_wan22_t2v config by its relative path
    model = random_model if (method, fmt) == FAST_CASE else MODEL  # the default run: seconds, not a minute
    cfg = cell_config("wan22_t2v", method, fmt, tmp_path / "run", str(model), extra=SMALL)
    result, fake = quantize_keeping_pipe(cfg, tmp_path / "run")
    assert sorted(p.name for p in result.export_dir.iterdir()) == sorted(EXPERT_DIRS.values())
    assert verify_experts(result.export_dir) == {d: [] for d in EXPERT_DIRS.values()}
    conv = convert_experts(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                           copy_no_weight_files=True)
    assert verify_experts(conv) == {d: [] for d in EXPERT_DIRS.values()}
    pipe = load_quantized_moe_pipeline(model, {n: conv / d for n, d in EXPERT_DIRS.items()}, "cpu", torch.float32)
    linear = W8A8Linear if fmt in ("W8A8-int8", "FP8-e4m3") else EmulatedLinear
    for name in EXPERT_DIRS:
        expert = getattr(pipe, name)
        assert expert.quant_info.scheme == SCHEMES[fmt], name
        assert sum(isinstance(m, linear) for m in expert.modules()) == 10 * len(expert.blocks), name

    for name in EXPERT_DIRS:  # each expert's checkpoint decodes to its own fake-quant weights and biases
        assert_same_weights(getattr(pipe, name), getattr(fake, name), fmt)

    (ev, samples), = load_eval_samples(cfg)
    params = GenParams.from_section(ev, cfg.base.seed)
    calls = expert_calls(fake, samples[0], params)
    check_expert_schedule(calls)
    floats = load_pipeline(model, "Wan22T2V", "float32")
    worst = 0.0
    for name, kwargs, pred in calls:
        kwargs = kwargs | {"return_dict": False}
        runtime, reference = getattr(pipe, name)(**kwargs)[0], getattr(floats, name)(**kwargs)[0]
        fake_err = rel_err(pred, reference)
        assert 0 < fake_err < 0.5, (name, fake_err)  # quantized, and not broken
        worst = max(worst, rel_err(runtime, pred) / fake_err)
    record_property("worst_ratio", worst)
    assert worst <= SAME_FUNCTION[fmt], worst

    clip = generate_video(pipe, samples[0], params)  # guarded: a black clip would raise, naming the expert
    ref, fake_clip = result.videos[(ev.path, 0)]
    assert np.isfinite(clip).all() and clip.shape == ref.shape
    p_fake, p_float = psnr(clip, fake_clip), psnr(clip, ref)
    record_property("psnr_runtime_vs_fake", p_fake)
    record_property("psnr_runtime_vs_float", p_float)
    assert p_fake >= MIN_CLIP_PSNR[fmt], p_fake

# ----------------------------------------------------------------------------------------------- TI2V

# TI2V-5B (one transformer, per-token timesteps, the z_dim 48 Wan2.2 VAE) goes through the single-model path:
# every method and every format at least once (each method with formats in turn), alternating t2v and its
# image-conditioned i2v mode, through lightx2v's command line (`vidquant infer --model_cls wan2.2`), on a random
# test-size TI2V wide enough for every format's blocks (hidden 256, as Marlin's W4A16 layout needs). Bounds as Wan2.1's
# runtime tests on random models: the emulated formats that compute the fake-quant function >= 60 dB
# (tests/test_formats_infer.py), W8A8 (real GEMMs, fp32 rounding) and W4A16 (fp16 group scales) >= 40 dB.
TI2V_CASES = [(method, fmt, ("t2v", "i2v")[i % 2]) for i, (method, fmt) in
              enumerate(zip([*METHODS, *METHODS], SCHEMES))]
TI2V_GEN = {"num_inference_steps": 3, "target_height": 64, "target_width": 64, "num_frames": 5}


@pytest.fixture(scope="module")
def random_ti2v(tmp_path_factory):
    from dataclasses import replace

    from vidquant.models.tiny import TEST_SIZES

    sizes = replace(TEST_SIZES, heads=4, head_dim=64, ffn_dim=512)
    return make_random_tiny_wan22_dir("ti2v", tmp_path_factory.mktemp("wan22") / "ti2v", sizes=sizes, wan22_vae=True)


@pytest.mark.slow
@pytest.mark.parametrize("method,fmt,task", TI2V_CASES, ids=[f"{m}-{f}-{t}" for m, f, t in TI2V_CASES])
def test_ti2v_every_method_and_format_through_vidquant_infer(tmp_path, monkeypatch, capsys, method, fmt, task,
                                                              random_ti2v, record_property):
    from tests_support import infer_clip, runtime_psnrs

    from vidquant.export.converter import convert
    from vidquant.export.lightx2v_config import write_lightx2v_config
    from vidquant.export.verify import verify

    assert {m for m, _, _ in TI2V_CASES} == set(METHODS) and {f for _, f, _ in TI2V_CASES} == set(SCHEMES)
    monkeypatch.chdir(REPO)
    sets = {f"{s}.{k}": v for s in ("calib", "eval") for k, v in (("name", task), ("path", f"assets/{s}/tiny_{task}"))}
    extra = {**{f"{s}.{k}": v for s in ("calib", "eval") for k, v in TI2V_GEN.items()}, **sets,
             "calib.sample_steps": 2, "eval.num_samples": 1}
    cfg = cell_config("wan22_ti2v", method, fmt, tmp_path / "run", str(random_ti2v), extra=extra)
    assert cfg.model.type == "Wan22TI2V" and cfg.task == task
    result = quantize(cfg, progress=False)
    assert verify(result.export_dir) == []
    conv = convert(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                   copy_no_weight_files=True)
    assert verify(conv) == []
    (ev, samples), = load_eval_samples(cfg)
    ref, fake = result.videos[(ev.path, 0)]
    config = tmp_path / "ti2v.json"
    written = write_lightx2v_config(config, task=task, scheme=SCHEMES[fmt], quantized_ckpt=conv,
                                    infer_steps=ev.num_inference_steps, target_height=ev.target_height,
                                    target_width=ev.target_width, target_video_length=ev.num_frames,
                                    guidance_scale=ev.guidance_scale, seed=cfg.base.seed)
    layout = {"num_channels_latents": 48, "vae_stride": [4, 16, 16], "use_image_encoder": False}
    config.write_text(json.dumps(written | layout | {"text_len": ev.max_sequence_length}))
    argv = ["--model_cls", "wan2.2", "--task", task, "--model_path", str(random_ti2v), "--config_json", str(config),
            "--prompt", samples[0].prompt, "--save_video_path", str(tmp_path / "out.mp4"), "--device", "cpu",
            "--dtype", "float32", "--numerics", "vidquant"]
    if task == "i2v":
        argv += ["--image_path", str(samples[0].image)]
    clip = infer_clip(argv, monkeypatch)
    p_fake, p_float = runtime_psnrs(clip, fake, ref, f"ti2v {task} {method} {fmt}", record_property, capsys)
    assert p_fake >= (40.0 if fmt in ("W8A8-int8", "FP8-e4m3", "W4A16-g128") else 60.0), p_fake
    assert p_fake > p_float  # the quantized transformer ran
