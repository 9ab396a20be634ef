"""`vidquant quantize` in memory vs `--stream` on a Wan-1.3B-shaped pipeline: same export? what peak memory?

Builds a random pipeline whose transformer has Wan2.1-T2V-1.3B's shape (30 blocks, hidden 1536, FFN 8960, text
dim 4096; bf16 on disk), with a one-layer text encoder and the tiny VAE, then runs the same config (SmoothQuant
α=0.75, W8A8 int8, tiny video sizes, no eval) both ways, each in a fresh process, and compares every exported
tensor bit for bit and `config.json` byte for byte. About 15 minutes and 7 GiB on 2 CPU cores.

    python benchmarks/stream_cli.py [WORK_DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
GEN = {"target_height": 32, "target_width": 32, "num_frames": 5, "guidance_scale": 5.0, "num_inference_steps": 4,
       "max_sequence_length": 16}
PEAK = ("import resource, sys, vidquant.cli as c; rc = c.main(sys.argv[1:]); "
        "print('peak_rss_gib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20); sys.exit(rc)")


def build(model: Path) -> None:
    from vidquant.models.tiny import TinySizes, build_tiny_pipeline, save_tiny_pipeline

    sizes = TinySizes(heads=12, head_dim=128, layers=30, ffn_dim=8960, freq_dim=256, text_dim=4096, text_layers=1,
                      text_heads=1, text_ff=64, text_vocab=64)
    save_tiny_pipeline(build_tiny_pipeline("t2v", 0, **asdict(sizes)), model, transformer_dtype=torch.bfloat16)


def config(model: Path, out: Path) -> dict:
    return {"base": {"seed": 42},
            "model": {"type": "WanT2V", "path": str(model), "torch_dtype": "torch.bfloat16", "device": "cpu"},
            "calib": {"name": "t2v", "path": str(REPO / "assets/calib/tiny_t2v"), "sample_steps": 4, **GEN},
            "quant": {"video_gen": {"method": "SmoothQuant", "special": {"alpha": 0.75},
                                    "weight": {"bit": 8, "symmetric": True, "granularity": "per_channel"},
                                    "act": {"bit": 8, "symmetric": True, "granularity": "per_token"}}},
            "save": {"save_lightx2v": True, "save_path": str(out), "overwrite": True}}


def main() -> int:
    from vidquant.export.io import load_state_dict

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vidquant_stream_cli")
    model = work / "model"
    if not (model / "model_index.json").is_file():  # in its own process: a child inherits its parent's peak RSS
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
                        f"import stream_cli; stream_cli.build(stream_cli.Path({str(model)!r}))"], check=True)
    rows = {}
    for mode in ("memory", "stream"):
        cfg = work / f"{mode}.yaml"
        cfg.write_text(yaml.safe_dump(config(model, work / mode)))
        argv = ["quantize", "--config", str(cfg), "--quiet", *(["--stream"] if mode == "stream" else [])]
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, check=True)
        peak = float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("peak_rss_gib")))
        rows[mode] = {"seconds": round(time.time() - t0), "peak_rss_gib": round(peak, 2)}
    a, b = (load_state_dict(work / mode / "lightx2v_quant_model") for mode in ("memory", "stream"))
    same = sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) for k in a)
    config_same = all((work / m / "lightx2v_quant_model/config.json").read_bytes() ==
                      (work / "memory/lightx2v_quant_model/config.json").read_bytes() for m in ("stream",))
    print(json.dumps({**rows, "tensors": len(a), "identical_tensors": same, "identical_config": config_same}))
    return 0 if same and config_same else 1


if __name__ == "__main__":
    sys.exit(main())
