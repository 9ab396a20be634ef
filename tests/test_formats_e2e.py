"""End to end for the formats beyond W8A8 on the shipped tiny models: quantize -> export -> convert (-d backward)
-> verify -> emulated runtime, with fast generation settings. One representative per task runs by default; the
whole grid (every format x T2V / I2V, and calibrated methods) is marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_keymap import same_bytes

from vidquant.cli import main as cli_main
from vidquant.config import load_config
from vidquant.export import keymap
from vidquant.export.converter import convert
from vidquant.export.formats import expected_layout
from vidquant.export.verify import verify
from vidquant.run import quantize
from vidquant.runtime.emulated import EmulatedLinear
from vidquant.runtime.model import load_quantized_transformer

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = {"mxfp8": "mxfp8", "mxfp6": "mxfp6-mxfp8", "mxfp4": "mxfp4", "nvfp4": "nvfp4",
           "int4_g128": "int4-g128-marlin", "fp8_pertensor": "fp8-pertensor"}
FAST_CASES = {("t2v", "rtn_mxfp4"), ("i2v", "rtn_nvfp4")}
# relative L2 error of the runtime's denoiser output vs the float model's (same input), generous bounds
MAX_REL_ERR = {"mxfp8": 0.15, "mxfp6": 0.25, "mxfp4": 0.6, "nvfp4": 0.6, "int4_g128": 0.5, "fp8_pertensor": 0.2}


def fast(out: Path) -> dict:
    gen = {"num_inference_steps": 2, "target_height": 32, "target_width": 32, "num_frames": 5}
    return {**{f"calib.{k}": v for k, v in gen.items()}, "calib.sample_steps": 2,
            **{f"eval.{k}": v for k, v in gen.items()}, "eval.num_samples": 1, "eval.eval_pos": ["fake_quant"],
            "save.save_path": str(out), "eval.output_video_path": str(out / "videos")}


def _cases():
    for task in ("t2v", "i2v"):
        for fmt in SCHEMES:
            for method in ("rtn", "smoothquant", "awq", "gptq"):
                if method == "awq" and (task, fmt) not in {("t2v", "mxfp4"), ("i2v", "nvfp4"), ("t2v", "int4_g128")}:
                    continue  # AWQ's grid search is the slowest method: a sample of formats
                case = (task, f"{method}_{fmt}")
                slow = case not in FAST_CASES
                yield pytest.param(*case, marks=[pytest.mark.slow] if slow else [], id=f"{task}-{method}_{fmt}")


def _inputs(config, task: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    kw = {"hidden_states": torch.randn(1, config.in_channels, 3, 8, 8, generator=g),
          "timestep": torch.tensor([500.0]),
          "encoder_hidden_states": torch.randn(1, 16 if task == "t2v" else 512, config.text_dim, generator=g)}
    if task == "i2v":
        kw["encoder_hidden_states_image"] = torch.randn(1, 257, config.image_dim, generator=g)
    return kw


@pytest.mark.parametrize("task,recipe", list(_cases()))
def test_quantize_export_convert_verify_runtime(tmp_path, monkeypatch, task, recipe):
    from diffusers import WanTransformer3DModel

    monkeypatch.chdir(ROOT)
    fmt = recipe.split("_", 1)[1]
    scheme = SCHEMES[fmt]
    cfg = load_config(f"configs/quantization/video_gen/tiny_{task}/{recipe}.yaml", fast(tmp_path / "run"))
    result = quantize(cfg, progress=False)
    export = result.export_dir
    assert verify(export) == []

    converted = convert(export, tmp_path / "conv", direction="backward", copy_no_weight_files=True, progress=False)
    assert verify(converted) == []
    # pass-through: every exported tensor reaches the converted checkpoint bit for bit, under its Wan name
    exp = {k: v for f in export.glob("*.safetensors") for k, v in load_file(f).items()}
    conv = {k: v for f in converted.glob("*.safetensors") for k, v in load_file(f).items()}
    assert all(same_bytes(conv[keymap.to_wan(k)], v) for k, v in exp.items())
    q = "blocks.0.self_attn.q"
    layout = expected_layout(scheme, 256, 256)  # the tiny models' hidden size
    assert {s: (conv[f"{q}.{s}"].dtype, tuple(conv[f"{q}.{s}"].shape)) for s in layout} == layout

    base = ROOT / f"assets/models/tiny-wan-{task}"
    runtime = load_quantized_transformer(converted, base, dtype=torch.float32)
    assert runtime.quant_info.scheme == scheme
    assert all(isinstance(b.attn1.to_q, EmulatedLinear) for b in runtime.blocks)
    ref = WanTransformer3DModel.from_pretrained(base / "transformer").eval()
    kw = _inputs(ref.config, task)
    with torch.no_grad():
        y, y_ref = runtime(**kw)[0], ref(**kw)[0]
    rel = float((y - y_ref).norm() / y_ref.norm())
    assert torch.isfinite(y).all() and rel < MAX_REL_ERR[fmt], rel


def test_quantize_refuses_what_lightx2v_cannot_run_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    calls = []
    monkeypatch.setattr("vidquant.run.load_pipeline", lambda *a, **k: calls.append(a))
    base = "configs/quantization/video_gen/tiny_t2v"
    cases = [
        (f"{base}/rtn_mxfp8.yaml", ["quant.video_gen.weight.bit=e5m2"], "no lightx2v kernel"),
        (f"{base}/rtn_mxfp4.yaml", ["quant.video_gen.act.bit=e4m3"], "no lightx2v kernel"),
        (f"{base}/gptq_nvfp4.yaml", ["quant.video_gen.special.static_groups=false"], "static_groups"),
        (f"{base}/rtn_fp8_pertensor.yaml", ["quant.video_gen.act.static=false"], "input_scale"),
        (f"{base}/rtn_mxfp4.yaml", ["quant.video_gen.weight.block_size=16"], "blocks of 32"),
    ]
    for path, sets, message in cases:
        argv = ["quantize", "--config", path, "--quiet", *[a for s in sets for a in ("--set", s)],
                "--set", f"save.save_path={tmp_path / 'x'}"]
        assert cli_main(argv) == 2, sets
        assert message in capsys.readouterr().err, sets
    assert calls == [] and not (tmp_path / "x").exists()
