"""Helpers shared by tests (not fixtures): small configs for the random tiny models."""

from __future__ import annotations

import yaml


def tiny_config(tmp_path, model_dir, task="t2v", method="RTN", **quant) -> dict:
    gen = {"target_height": 32, "target_width": 32, "num_frames": 5, "guidance_scale": 5.0,
           "num_inference_steps": 4, "max_sequence_length": 16 if task == "t2v" else 512}
    fmt = quant or {"bit": 8, "symmetric": True}
    return {
        "base": {"seed": 42},
        "model": {"type": "WanI2V" if task == "i2v" else "WanT2V", "path": str(model_dir),
                  "torch_dtype": "torch.float32", "device": "cpu"},
        "calib": {"name": task, "path": f"assets/calib/tiny_{task}", "sample_steps": 4, **gen},
        "eval": {"eval_pos": ["pretrain", "fake_quant"], "name": task, "path": f"assets/eval/tiny_{task}",
                 "output_video_path": str(tmp_path / "videos"), **gen},
        "quant": {"video_gen": {"method": method, "weight": {**fmt, "granularity": "per_channel"},
                                "act": {**fmt, "granularity": "per_token"}}},
        "save": {"save_lightx2v": True, "save_path": str(tmp_path / "save")},
    }


def write_config(tmp_path, cfg) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def deny_write(monkeypatch, path) -> None:
    """Make the directory `path` unwritable for the code under test, whoever runs the tests.

    It is made read-only (mode 0o500); root ignores that (CI runs as root), so when the process can still
    write there, os.access is patched to say what a normal user's would: no write permission for `path`.
    """
    import os
    from pathlib import Path

    path = Path(path)
    path.mkdir(mode=0o500, exist_ok=True)
    path.chmod(0o500)
    if not os.access(path, os.W_OK):
        return
    real_access = os.access

    def access(p, mode, *args, **kwargs):
        if Path(p).absolute() == path.absolute() and mode & os.W_OK:
            return False
        return real_access(p, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def infer_clip(argv: list[str], monkeypatch):
    """Run ``vidquant infer`` (the top-level CLI) and return the clip it saves, as an array (the mp4 on disk is
    lossy)."""
    import numpy as np

    import vidquant.eval.video as video
    from vidquant.cli import main as cli_main

    saved = []
    real = video.save_video

    def keep(clip, path, fps):
        saved.append(np.array(clip))
        return real(clip, path, fps)

    monkeypatch.setattr(video, "save_video", keep)
    assert cli_main(["infer", *argv]) == 0
    assert len(saved) == 1
    return saved[0]


def runtime_psnrs(clip, fake_quant, float_clip, label: str, record_property, capsys) -> tuple[float, float]:
    """PSNR of a runtime clip against the fake-quant and the float clip of the same prompt and seed, recorded as
    test properties and printed (the numbers the runtime tests bound and the notes quote)."""
    import numpy as np

    from vidquant.eval.metrics import psnr

    assert clip.shape == fake_quant.shape == float_clip.shape and np.isfinite(clip).all()
    p_fake, p_float = psnr(clip, fake_quant), psnr(clip, float_clip)
    record_property("psnr_runtime_vs_fake", p_fake)
    record_property("psnr_runtime_vs_float", p_float)
    with capsys.disabled():
        print(f"\n[{label}] runtime vs fake-quant {p_fake:.1f} dB, vs float {p_float:.1f} dB")
    return p_fake, p_float
