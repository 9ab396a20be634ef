"""Checkpoint size: the int8 and fp8 lightx2v exports against the bf16 transformer checkpoint.

Limit: the block linears go from 2 bytes to 1 byte per weight (plus one fp32 scale per output channel);
everything else (embeddings, head, norms, biases, modulation tables, the fp32 ``affine_norm`` vectors) keeps
its size. So the ratio's floor is ``(linear_bytes / 2 + scales + rest) / bf16_bytes``, a little over 0.5 for
Wan (the linears are ~98 % of the 1.3B model) and higher for the tiny model (larger embeddings share).
The exports are written for real (``vidquant.stream.stream_export``, RTN grids: the size does not depend on
the algorithm) and the bytes on disk are counted.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from common import RESULTS, log, machine_info, md_table, write_csv, write_md
from safetensors import safe_open

from vidquant.quant import FloatQuantizer, IntQuantizer
from vidquant.stream import CheckpointReader, stream_export

QUANTIZERS = {"int8": lambda: IntQuantizer(8, symmetric=True, granularity="per_channel"),
              "fp8": lambda: FloatQuantizer("e4m3", granularity="per_channel")}


def folder_bytes(folder: Path, suffix: str = ".safetensors") -> int:
    """Bytes of the weight files in a folder (headers included: what a user downloads)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.name.endswith(suffix))


def linear_fraction(checkpoint: Path) -> tuple[int, int]:
    """(bytes of the block-linear weights, bytes of everything) in the bf16 checkpoint, from the headers."""
    from vidquant.models.layout import I2V_EXTRA_LINEARS, T2V_LINEARS

    names = tuple(f".{n}.weight" for n in T2V_LINEARS + I2V_EXTRA_LINEARS)
    reader = CheckpointReader(checkpoint)
    linear = total = 0
    for key, path in reader.key_file.items():
        with safe_open(str(path), framework="pt") as f:
            sl = f.get_slice(key)
            n = 1
            for d in sl.get_shape():
                n *= d
            nbytes = n * _itemsize(sl.get_dtype())
        total += nbytes
        if key.startswith("blocks.") and key.endswith(names):
            linear += nbytes
    return linear, total


def _itemsize(dtype: str) -> int:
    return {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "F8_E4M3": 1, "I64": 8, "I32": 4}[dtype]


def size_rows(checkpoint: Path, label: str) -> list[dict]:
    """Export the checkpoint as int8 and fp8; one row per format."""
    checkpoint = Path(checkpoint)
    bf16 = folder_bytes(checkpoint)
    linear, total = linear_fraction(checkpoint)
    n_out = _linear_out_channels(checkpoint)
    floor = (total - linear / 2 + 4 * n_out) / total
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidquant_bench_size_") as tmp:
        for fmt, make in QUANTIZERS.items():
            out = stream_export(checkpoint, make(), Path(tmp) / fmt, progress=False)
            q = folder_bytes(out)
            rows.append({"model": label, "format": fmt, "bf16_bytes": bf16, "export_bytes": q,
                         "ratio": round(q / bf16, 4), "floor_ratio": round(floor, 4),
                         "linear_share_of_bf16": round(linear / total, 4)})
            log(f"size: {label} {fmt}: {q / 2**20:.1f} MiB vs bf16 {bf16 / 2**20:.1f} MiB -> {q / bf16:.3f}")
            shutil.rmtree(out, ignore_errors=True)
    return rows


def _linear_out_channels(checkpoint: Path) -> int:
    """Total output channels of the block linears (one fp32 scale each in the export)."""
    from vidquant.models.layout import I2V_EXTRA_LINEARS, T2V_LINEARS

    names = tuple(f".{n}.weight" for n in T2V_LINEARS + I2V_EXTRA_LINEARS)
    reader = CheckpointReader(checkpoint)
    n = 0
    for key, path in reader.key_file.items():
        if key.startswith("blocks.") and key.endswith(names):
            with safe_open(str(path), framework="pt") as f:
                n += f.get_slice(key).get_shape()[0]
    return n


def tiny_checkpoint(work: Path) -> tuple[Path, str]:
    """The tiny T2V transformer (trained when shipped, else random), saved in bf16."""
    from block import TINY_DIR
    from diffusers import WanTransformer3DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the deliberate all-bf16 cast below would warn
    if (TINY_DIR / "model_index.json").is_file():
        src, label = TINY_DIR / "transformer", "tiny-wan-t2v (trained)"
        model = WanTransformer3DModel.from_pretrained(src, torch_dtype=torch.bfloat16)
    else:
        from vidquant.models.tiny import build_tiny_components

        model, label = build_tiny_components("t2v")["transformer"].to(torch.bfloat16), "tiny-wan-t2v (random)"
    folder = work / "tiny-transformer"
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder, label


def run(checkpoint: Path | None = None, label: str = "wan2.1-1.3b-shaped", out_dir: Path = RESULTS,
        suffix: str = "") -> list[dict]:
    """Size rows for the tiny model and (when given) a Wan-1.3B-shaped checkpoint; writes size{suffix}.csv/.md."""
    info = machine_info("cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidquant_bench_tiny_") as tmp:
        folder, tiny_label = tiny_checkpoint(Path(tmp))
        rows += size_rows(folder, tiny_label)
    if checkpoint is not None:
        rows += size_rows(Path(checkpoint), label)
    write_csv(rows, out_dir / f"size{suffix}.csv", info)
    note = ("ratio = export bytes / bf16 checkpoint bytes (safetensors files on disk). floor_ratio = "
            "(all bf16 bytes - half the block-linear bytes + 4 bytes per output channel) / all bf16 bytes: "
            "what 8-bit block linears with fp32 per-channel scales can reach when nothing else changes.\n")
    write_md(out_dir / f"size{suffix}.md", "Checkpoint size: int8 / fp8 export vs bf16", info,
             [("Sizes", note + "\n" + md_table(rows))])
    return rows


if __name__ == "__main__":
    run()
