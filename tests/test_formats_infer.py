"""`vidquant infer` (the lightx2v-JSON runtime) on the formats beyond W8A8: quantize (RTN, the methods x formats
table's cell config of each format) -> export -> convert -d backward -> `vidquant infer` with the inference JSON
written by `write_lightx2v_config` -> the clip must agree with the fake-quant clip `vidquant quantize` generated for
the same prompt, seed and sampler.

What differs between the two, and so the bounds (PSNR of the runtime clip against the fake-quant clip, dB):

* mxfp8 / mxfp6-mxfp8 / mxfp4: nothing but fp32 summation order. The runtime decodes the exported codes and E8M0
  scales to the very weight values fake-quant multiplies and quantizes activations with the same dynamic MX rule;
  a flipped activation code downstream is the only way to differ. Bound 60 dB (the W8A8 runtime's bound).
* int4-g128-marlin: the export stores Marlin's fp16 group scales (fake-quant: fp32), a relative weight change
  <= 2^-11 (measured 69-72 dB). Bound 40 dB.
* nvfp4 / fp8-pertensor: the fake-quant model quantizes activations on the calibrated static global / per-tensor
  scale the export stores (deploy_fake_quant with the run's input_absmax), as lightx2v does: the same function
  (measured: identical clips). Bound 60 dB. (Before it used a dynamic per-call scale: 19-24 dB.)

And the runtime clip must differ from the float clip (the format is not silently skipped): PSNR(runtime, float)
below 45 dB (measured 16-26 dB). Measured values are printed (``-s``) and recorded as test properties.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_support import infer_clip, runtime_psnrs

from vidquant.calib.samples import load_samples
from vidquant.cli import main as cli_main
from vidquant.eval.metrics import psnr
from vidquant.export.converter import convert
from vidquant.export.lightx2v_config import write_lightx2v_config
from vidquant.run import quantize
from vidquant.tables import BLOCK_FORMATS, cell_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = {"MXFP8": "mxfp8", "MXFP6-MXFP8": "mxfp6-mxfp8", "MXFP4": "mxfp4", "NVFP4": "nvfp4",
           "W4A16-g128": "int4-g128-marlin", "FP8-pertensor": "fp8-pertensor"}
MIN_PSNR_VS_FAKE = {"mxfp8": 60.0, "mxfp6-mxfp8": 60.0, "mxfp4": 60.0, "int4-g128-marlin": 40.0, "nvfp4": 60.0,
                    "fp8-pertensor": 60.0}
FAST = {("t2v", "MXFP4"), ("t2v", "NVFP4")}  # ~10-16 s each; I2V and the rest: slow
GEN = {"num_inference_steps": 3, "target_height": 32, "target_width": 32, "num_frames": 5}


@contextmanager
def _in_repo():
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(old)


def _cases():
    for task in ("t2v", "i2v"):
        for fmt in BLOCK_FORMATS:
            marks = [] if (task, fmt) in FAST else [pytest.mark.slow]
            yield pytest.param(task, fmt, marks=marks, id=f"{task}-{fmt}")


def _quantize(task: str, fmt: str, out: Path):
    """The RTN cell of the methods x formats table at fast generation settings; returns (result, eval sample)."""
    fast = {**{f"calib.{k}": v for k, v in GEN.items()}, "calib.sample_steps": 2,
            **{f"eval.{k}": v for k, v in GEN.items()}, "eval.num_samples": 1, "eval.eval_pos": ["fake_quant"]}
    with _in_repo():
        cfg = cell_config(task, "RTN", fmt, out, extra=fast)
        result = quantize(cfg, progress=False)
    ev = cfg.evals[0]
    return result, ev, load_samples(cfg.resolve_path(ev.path), task)[0]


def _infer_json(path: Path, task: str, scheme: str, ckpt: Path, ev) -> Path:
    write_lightx2v_config(path, task=task, scheme=scheme, quantized_ckpt=ckpt, infer_steps=ev.num_inference_steps,
                          target_height=ev.target_height, target_width=ev.target_width,
                          target_video_length=ev.num_frames, guidance_scale=ev.guidance_scale, seed=42)
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "text_len": ev.max_sequence_length}, indent=4))
    return path


@pytest.mark.parametrize("task,fmt", list(_cases()))
def test_infer_runs_the_format_and_agrees_with_fake_quant(tmp_path, monkeypatch, capsys, record_property, task, fmt):
    scheme = SCHEMES[fmt]
    result, ev, sample = _quantize(task, fmt, tmp_path / "run")
    float_clip, fq_clip = result.videos[(ev.path, 0)]
    converted = convert(result.export_dir, tmp_path / "conv", direction="backward", copy_no_weight_files=True,
                        progress=False)
    cfg = _infer_json(tmp_path / "infer.json", task, scheme, converted, ev)
    base = ROOT / f"assets/models/tiny-wan-{task}"
    argv = ["--model_cls", "wan2.1", "--task", task, "--model_path", str(base), "--config_json", str(cfg),
            "--prompt", sample.prompt, "--negative_prompt", sample.negative_prompt or "",
            "--save_video_path", str(tmp_path / "out.mp4"), "--device", "cpu", "--dtype", "float32"]
    if task == "i2v":
        argv += ["--image_path", str(sample.image)]
    capsys.readouterr()
    clip = infer_clip(argv, monkeypatch)
    log = capsys.readouterr().out
    assert f"{scheme} from {converted}, EMULATED (dequantize-then-GEMM" in log, log
    p_fq, p_float = runtime_psnrs(clip, fq_clip, float_clip, f"{task} {scheme}", record_property, capsys)
    assert p_fq >= MIN_PSNR_VS_FAKE[scheme], p_fq
    assert math.isfinite(p_float) and p_float < 45  # the format is really applied (measured 16-26 dB)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["MXFP4", "NVFP4"])
def test_infer_moe_runs_a_block_format(tmp_path, monkeypatch, capsys, fmt):
    """`vidquant infer --model_cls wan2.2_moe` shares the loader: both experts of the shipped tiny Wan2.2 A14B-style
    mixture, exported in mxfp4 / nvfp4 (each expert with its own calibrated static activation scales), run emulated
    and give the fake-quant clip (bit for bit, as Wan2.1's)."""
    from vidquant.config import load_config
    from vidquant.export.experts import EXPERT_DIRS, convert_experts, write_lightx2v_moe_config
    from vidquant.runtime.emulated import EmulatedLinear

    fast = {**{f"calib.{k}": v for k, v in GEN.items()}, "calib.sample_steps": 2,
            **{f"eval.{k}": v for k, v in GEN.items()}, "eval.num_samples": 1, "eval.eval_pos": ["fake_quant"],
            "quant.video_gen.weight": BLOCK_FORMATS[fmt]["weight"],
            "quant.video_gen.act": BLOCK_FORMATS[fmt]["act"], "save.save_path": str(tmp_path / "run"),
            "eval.output_video_path": str(tmp_path / "run" / "videos")}
    with _in_repo():
        cfg = load_config("configs/quantization/video_gen/tiny_wan22_t2v/rtn_w_a.yaml", fast)
        result = quantize(cfg, progress=False)
    ev = cfg.evals[0]
    sample = load_samples(cfg.resolve_path(ev.path), "t2v")[0]
    _, fq_clip = result.videos[(ev.path, 0)]
    conv = convert_experts(result.export_dir, tmp_path / "conv", direction="backward", progress=False,
                           copy_no_weight_files=True)
    model = ROOT / "assets/models/tiny-wan22-t2v"
    boundary = json.loads((model / "model_index.json").read_text())["boundary_ratio"]
    moe_json = tmp_path / "moe.json"
    write_lightx2v_moe_config(moe_json, task="t2v", scheme=SCHEMES[fmt], boundary=boundary,
                              guidance_scale=ev.guidance_scale,
                              quantized_ckpts={d: conv / d for d in EXPERT_DIRS.values()},
                              infer_steps=ev.num_inference_steps, target_height=ev.target_height,
                              target_width=ev.target_width, target_video_length=ev.num_frames, seed=42)
    moe_json.write_text(json.dumps({**json.loads(moe_json.read_text()), "text_len": ev.max_sequence_length}))
    import vidquant.runtime.moe as moe

    loaded = []
    real = moe.load_quantized_moe_pipeline
    monkeypatch.setattr(moe, "load_quantized_moe_pipeline", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[0])
    argv = ["--model_cls", "wan2.2_moe", "--task", "t2v", "--model_path", str(model), "--config_json", str(moe_json),
            "--prompt", sample.prompt, "--negative_prompt", sample.negative_prompt or "",
            "--save_video_path", str(tmp_path / "out.mp4"), "--device", "cpu", "--dtype", "float32"]
    clip = infer_clip(argv, monkeypatch)
    for name in ("transformer", "transformer_2"):
        expert = getattr(loaded[0], name)
        assert expert.quant_info.scheme == SCHEMES[fmt]
        assert sum(isinstance(m, EmulatedLinear) for m in expert.modules()) == len(expert.blocks) * 10
    p_fq = psnr(clip, fq_clip)
    with capsys.disabled():
        print(f"\n[wan2.2_moe t2v {SCHEMES[fmt]}] infer vs fake-quant {p_fq:.1f} dB")
    assert p_fq >= MIN_PSNR_VS_FAKE[SCHEMES[fmt]], p_fq


# ----------------------------------------------------------------------------------------------- settings, errors
@pytest.fixture(scope="module")
def mxfp4_export(tmp_path_factory):
    """An RTN mxfp4 export (diffusers keys: vidquant infer reads an export as well as a converted checkpoint)."""
    from diffusers import WanTransformer3DModel

    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.quant.blockfmt import MXQuantizer

    tr = WanTransformer3DModel.from_pretrained(ROOT / "assets/models/tiny-wan-t2v/transformer").eval()
    return export_lightx2v(tr, MXQuantizer("e2m1"), tmp_path_factory.mktemp("mxfp4"), scheme="mxfp4")


def _settings(cfg_path: Path, model_path: Path):
    from vidquant.export.lightx2v_config import read_lightx2v_config
    from vidquant.runtime.infer import resolve_settings

    return resolve_settings(read_lightx2v_config(cfg_path), config_path=cfg_path, task="t2v", model_path=model_path)


@pytest.mark.parametrize("scheme,subdir", [("mxfp8", "mxfp8"), ("mxfp6-mxfp8", "mxfp6"), ("mxfp4", "mxfp4"),
                                           ("nvfp4", "nvfp4"), ("int4-g128-marlin", "int4"),
                                           ("fp8-pertensor", "fp8")])
def test_block_scheme_settings_and_default_checkpoint_dir(tmp_path, scheme, subdir):
    """The runtime runs the kernel the JSON names (fp8-pertensor is not fp8 per-channel W8A8); without
    dit_quantized_ckpt the checkpoint is <model_path>/<first token of the scheme>, as lightx2v's default."""
    (tmp_path / "model" / subdir).mkdir(parents=True)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"infer_steps": 2, "target_height": 32, "target_width": 32, "dit_quantized": True,
                               "dit_quant_scheme": scheme}))
    s = _settings(cfg, tmp_path / "model")
    assert (s.scheme, s.quantized, s.quantized_ckpt) == (scheme, True, tmp_path / "model" / subdir)
    from vidquant.runtime.infer import describe_matmul

    assert describe_matmul(s).startswith(f"{scheme} from {tmp_path / 'model' / subdir}, EMULATED")


def test_block_scheme_next_to_a_w8a8_mm_type_is_refused(tmp_path):
    from vidquant.export.lightx2v_config import ConfigError, read_lightx2v_config

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"dit_quantized": True, "dit_quant_scheme": "fp8-pertensor",
                               "mm_config": {"mm_type": "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm"}}))
    with pytest.raises(ConfigError, match="field 'mm_config.mm_type'.*different kernel than dit_quant_scheme"):
        read_lightx2v_config(cfg)


@pytest.mark.parametrize("asked,stored", [("mxfp8", "mxfp4"), ("int8", "mxfp4")])
def test_infer_refuses_a_checkpoint_of_another_format(tmp_path, capsys, mxfp4_export, asked, stored):
    cfg = tmp_path / "c.json"
    write_lightx2v_config(cfg, task="t2v", scheme=asked, quantized_ckpt=mxfp4_export, infer_steps=2,
                          target_height=32, target_width=32, target_video_length=5, guidance_scale=1.0, seed=42)
    out = tmp_path / "o.mp4"
    argv = ["infer", "--model_cls", "wan2.1", "--task", "t2v", "--model_path", str(ROOT / "assets/models/tiny-wan-t2v"),
            "--config_json", str(cfg), "--prompt", "a red square", "--save_video_path", str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"asks for {asked} but the checkpoint's block linears are {stored}" in err and "Traceback" not in err
    assert not out.exists()


def test_infer_runs_an_export_directly(tmp_path, monkeypatch, capsys, mxfp4_export):
    """The LLMC-layout export (diffusers keys) runs too, emulated, on the float-pipeline's sampler."""
    cfg = tmp_path / "c.json"
    write_lightx2v_config(cfg, task="t2v", scheme="mxfp4", quantized_ckpt=mxfp4_export, infer_steps=2,
                          target_height=32, target_width=32, target_video_length=5, guidance_scale=1.0, seed=42)
    argv = ["--model_cls", "wan2.1", "--task", "t2v", "--model_path", str(ROOT / "assets/models/tiny-wan-t2v"),
            "--config_json", str(cfg), "--prompt", "a red square", "--save_video_path", str(tmp_path / "o.mp4")]
    clip = infer_clip(argv, monkeypatch)
    assert clip.shape[0] == 5 and np.isfinite(clip).all()
    assert "mxfp4 from" in capsys.readouterr().out


def test_nvfp4_runtime_takes_the_activation_scale_as_lightx2v_does(tmp_path):
    """input_absmax wins over the stored input_global_scale (lightx2v derives the scale, and alpha, from it), and a
    checkpoint without it is refused naming the key (lightx2v's lazy_load path cannot load it either)."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.models.layout import block_linear_names
    from vidquant.quant.blockfmt import NVFP4Quantizer
    from vidquant.runtime import QuantizedCheckpointError, load_quantized_transformer

    base = ROOT / "assets/models/tiny-wan-t2v"
    tr = WanTransformer3DModel.from_pretrained(base / "transformer").eval()
    absmax = {f"blocks.{i}.{n}": torch.tensor(4.0) for i, b in enumerate(tr.blocks) for n in block_linear_names(b)}
    export = export_lightx2v(tr, NVFP4Quantizer(), tmp_path / "x", scheme="nvfp4", input_absmax=absmax)
    (f,) = export.glob("*.safetensors")
    state = load_file(f)
    q = "blocks.0.attn1.to_q"
    assert state[f"{q}.input_global_scale"].item() == pytest.approx(2688.0 / 4.0)
    state[f"{q}.input_absmax"] = torch.tensor(8.0)
    save_file(state, f, metadata={"format": "pt"})
    model = load_quantized_transformer(export, base, dtype=torch.float32)
    assert model.blocks[0].attn1.to_q.input_scale.item() == pytest.approx(2688.0 / 8.0)
    assert model.blocks[0].attn1.to_k.input_scale.item() == pytest.approx(2688.0 / 4.0)
    del state[f"{q}.input_absmax"]
    save_file(state, f, metadata={"format": "pt"})
    with pytest.raises(QuantizedCheckpointError, match=r"blocks\.0\.attn1\.to_q\.input_absmax: missing"):
        load_quantized_transformer(export, base, dtype=torch.float32)
