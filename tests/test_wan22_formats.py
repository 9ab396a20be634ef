"""Every method × every exported format on the shipped tiny Wan2.2 mixture (`assets/models/tiny-wan22-t2v`):
quantize → export (both experts) → convert (-d backward) → verify → the MoE runtime, with a small generation
(32×32, 5 frames, 4 steps, 2 calibration calls per expert and prompt). One case runs by default; the grid
(5 methods × 8 formats, `vidquant.tables`' METHODS × EXPORTED) is marked slow.

What is checked, teacher-forced on every expert call of one fake-quant generation (both experts, both CFG
branches), the runtime expert against the fake-quant expert `quantize` evaluated:

* formats whose runtime computes the fake-quant model's function (W8A8 int8 / fp8: real GEMMs; MXFP8, MXFP6,
  MXFP4: the same block quantizers, emulated): a relative difference below 10 % of that expert's own
  quantization error (fake-quant vs float). The MX runtimes are measured bit-exact; the real int8 GEMM differs
  from the fake-quant sum by fp32 rounding, which flips an activation code now and then (measured <= 5 % of the
  quantization error on these settings; 26-60 % at 64×64 over 20 steps, see tests/test_wan22.py).
* NVFP4, FP8-pertensor (static activation scales at run time, calibrated; the fake-quant evaluation uses the
  dynamic ones: docs/formats.md §5.7) and W4A16-g128 (Marlin's fp16 group scales): the runtime expert's error
  against float is at most 1.25× the fake-quant expert's.
* a swapped pair of experts gives a relative difference > 1 on every call (measured 1.28): the checks above
  see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_wan22 import check_expert_schedule, expert_calls, keeping_pipe, rel_err

from vidquant.eval.metrics import psnr
from vidquant.export.experts import EXPERT_DIRS, convert_experts, verify_experts
from vidquant.generate import GenParams, generate_video
from vidquant.models import load_pipeline
from vidquant.quant import W8A8Linear
from vidquant.run import load_eval_samples
from vidquant.runtime.emulated import EmulatedLinear
from vidquant.runtime.moe import load_quantized_moe_pipeline
from vidquant.tables import EXPORTED, METHODS, cell_config

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "assets/models/tiny-wan22-t2v"
SCHEMES = {"W8A8-int8": "int8", "FP8-e4m3": "fp8", "MXFP8": "mxfp8", "MXFP6-MXFP8": "mxfp6-mxfp8", "MXFP4": "mxfp4",
           "NVFP4": "nvfp4", "W4A16-g128": "int4-g128-marlin", "FP8-pertensor": "fp8-pertensor"}
SAME_FUNCTION = {"W8A8-int8", "FP8-e4m3", "MXFP8", "MXFP6-MXFP8", "MXFP4"}
FAST_CASE = ("SQ+GPTQ", "NVFP4")
GEN = {"num_inference_steps": 4, "target_height": 32, "target_width": 32, "num_frames": 5}
SMALL = {**{f"calib.{k}": v for k, v in GEN.items()}, "calib.sample_steps": 2, "eval.num_samples": 1,
         **{f"eval.{k}": v for k, v in GEN.items()}, "eval.eval_pos": ["fake_quant"]}


def _cases():
    assert set(SCHEMES) == EXPORTED  # a new exported format joins the grid here
    for method in METHODS:
        for fmt in SCHEMES:
            marks = [] if (method, fmt) == FAST_CASE else [pytest.mark.slow]
            yield pytest.param(method, fmt, marks=marks, id=f"{method}-{fmt}")


@pytest.fixture
def quantize_keeping_pipe(monkeypatch):
    return keeping_pipe(monkeypatch)


@pytest.fixture(scope="module")
def float_experts():
    pipe = load_pipeline(MODEL, "Wan22T2V", "float32")
    return {"transformer": pipe.transformer, "transformer_2": pipe.transformer_2}


@torch.no_grad()
@pytest.mark.parametrize("method,fmt", list(_cases()))
def test_every_method_and_format_through_the_moe_chain(tmp_path, monkeypatch, method, fmt, float_experts,
                                                       quantize_keeping_pipe, record_property):
    monkeypatch.chdir(REPO)  # cell_config reads the shipped tiny_wan22_t2v config by its relative path
    cfg = cell_config("wan22_t2v", method, fmt, tmp_path / "run", str(MODEL), extra=SMALL)
    result, fake = quantize_keeping_pipe(cfg, tmp_path / "run")
    assert sorted(p.name for p in result.export_dir.iterdir()) == sorted(EXPERT_DIRS.values())
    assert verify_experts(result.export_dir) == {d: [] for d in EXPERT_DIRS.values()}
    conv = convert_experts(result.export_dir, tmp_path / "converted", direction="backward", progress=False,
                           copy_no_weight_files=True)
    assert verify_experts(conv) == {d: [] for d in EXPERT_DIRS.values()}
    pipe = load_quantized_moe_pipeline(MODEL, {n: conv / d for n, d in EXPERT_DIRS.items()}, "cpu", torch.float32)
    linear = W8A8Linear if fmt in ("W8A8-int8", "FP8-e4m3") else EmulatedLinear
    for name in EXPERT_DIRS:
        expert = getattr(pipe, name)
        assert expert.quant_info.scheme == SCHEMES[fmt], name
        assert sum(isinstance(m, linear) for m in expert.modules()) == 10 * len(expert.blocks), name

    ev, samples = load_eval_samples(cfg)[0]
    params = GenParams.from_section(ev, cfg.base.seed)
    calls = expert_calls(fake, samples[0], params)
    check_expert_schedule(calls)
    worst = 0.0
    for name, kwargs, pred in calls:
        kwargs = kwargs | {"return_dict": False}
        runtime, reference = getattr(pipe, name)(**kwargs)[0], float_experts[name](**kwargs)[0]
        fake_err, runtime_err = rel_err(pred, reference), rel_err(runtime, reference)
        assert 0 < fake_err < 0.5, (name, fake_err)  # quantized, and not broken
        if fmt in SAME_FUNCTION:
            ratio = rel_err(runtime, pred) / fake_err
            assert ratio <= 0.1, (name, ratio)
        else:
            ratio = runtime_err / fake_err
            assert ratio <= 1.25, (name, ratio)
        worst = max(worst, ratio)
    record_property("worst_ratio", worst)

    clip = generate_video(pipe, samples[0], params)  # guarded: a black clip would raise, naming the expert
    ref, fake_clip = result.videos[(ev.path, 0)]
    assert np.isfinite(clip).all() and clip.shape == ref.shape
    record_property("psnr_runtime_vs_fake", psnr(clip, fake_clip))
    record_property("psnr_runtime_vs_float", psnr(clip, ref))
