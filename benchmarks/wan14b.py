"""Wan-14B on a machine with less memory than its weights: streamed calibration and export, measured.

    python benchmarks/run_all.py --only wan14b      # not part of `make bench`: ~45 GB of disk, ~20 minutes

A random-weight checkpoint with Wan2.1-14B's transformer config (40 blocks, dim 5120, ffn 13824; 28.6 GB in
bf16) is written block by block, so building it never holds more than one block either, and then quantized
by ``vidquant.stream`` (RTN and SmoothQuant, W8A8 int8) in a fresh process whose peak resident memory is
reported next to the weight bytes and the machine's RAM. In-memory calibration is not attempted: the weights
alone exceed this machine's memory, which is the point.

Needs free disk for the checkpoint and one export (1.55x the bf16 bytes); refuses up front otherwise.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from calibration import block_bytes
from common import RESULTS, gib, log, machine_info, md_table, run_in_subprocess, write_csv, write_md

#: Wan2.1-T2V-14B's transformer config.
WAN14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
              out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
METHODS = ("RTN", "SmoothQuant")


def build_checkpoint(folder: str, cfg: dict | None = None, seed: int = 0) -> dict:
    """A diffusers transformer folder (config.json, one safetensors shard per block plus one for the rest,
    the index) with random bf16 weights, written one block at a time (run in a child process)."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    from vidquant.export.io import INDEX_SUFFIX, save_file_deterministic, write_index

    cfg = {**WAN14B, **(cfg or {})}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dim, n = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["num_layers"]

    def shards():  # the non-block tensors, then one block at a time; each built only when it is written
        skeleton = WanTransformer3DModel(**{**cfg, "num_layers": 1})  # non-block modules (+ a block, dropped)
        skeleton.save_config(folder)  # num_layers corrected below
        yield {k: v for k, v in skeleton.state_dict().items() if not k.startswith("blocks.")}
        del skeleton
        for i in range(n):
            block = WanTransformerBlock(dim, cfg["ffn_dim"], cfg["num_attention_heads"], cfg["qk_norm"],
                                        cfg["cross_attn_norm"], cfg["eps"], None)
            yield {f"blocks.{i}.{k}": v for k, v in block.state_dict().items()}

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: no fp32 copy of anything
    weight_map, total = {}, 0
    try:
        for index, tensors in enumerate(shards()):
            name = f"diffusion_pytorch_model-{index + 1:05d}-of-{n + 1:05d}.safetensors"
            save_file_deterministic(tensors, folder / name, {"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, name))
            total += sum(t.numel() * t.element_size() for t in tensors.values())
    finally:
        torch.set_default_dtype(previous)
    write_index(folder, weight_map, total, "diffusion_pytorch_model" + INDEX_SUFFIX)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": n}, indent=2) + "\n")
    return {"bytes": total}


def machine_ram_bytes() -> int:
    """Total RAM (MemTotal of /proc/meminfo)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def run(methods: list[str] = METHODS, out_dir: Path = RESULTS, cfg: dict | None = None,
        shape: dict | None = None, work_root: str | None = None) -> list[dict]:
    """Build the checkpoint, stream-quantize it with each method, write ``calibration_wan14b.csv/.md``."""
    cfg = {**WAN14B, **(cfg or {})}
    shape = {"n_samples": 2, "frames": 4, "height": 16, "width": 16, "text_len": 512, **(shape or {})}
    weights = cfg["num_layers"] * block_bytes(cfg)
    work = Path(tempfile.mkdtemp(prefix="vidquant_bench_14b_", dir=work_root))
    free = shutil.disk_usage(work).free
    if free < 1.6 * weights:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"{work}: {gib(free)} GiB free, the 14B-shaped checkpoint and its export need about "
                           f"{gib(1.6 * weights)} GiB (pass work_root= a larger disk)")
    info = machine_info("cpu")
    rows = []
    try:
        t0 = time.perf_counter()
        built = run_in_subprocess("wan14b", "build_checkpoint", {"folder": str(work / "ckpt"), "cfg": cfg})
        log(f"wan14b: wrote {gib(built['bytes'])} GiB of bf16 weights in {time.perf_counter() - t0:.0f} s, "
            f"builder peak {gib(built['peak_rss_bytes'])} GiB")
        for method in methods:
            res = run_in_subprocess("calibration", "calibrate_once",
                                    {"checkpoint": str(work / "ckpt"), "mode": "stream", "method": method,
                                     "out_dir": str(work / "out"), **shape}, timeout_s=3600)
            export_bytes = sum(f.stat().st_size for f in (work / "out").rglob("*.safetensors"))
            shutil.rmtree(work / "out", ignore_errors=True)
            # calibrate_once resets the high-water mark after loading: the whole run's peak is the larger one
            peak = max(res["load_peak_rss_bytes"], res["calib_peak_rss_bytes"])
            rows.append({"method": method, "blocks": cfg["num_layers"], "weights_bytes": built["bytes"],
                         "export_bytes": export_bytes, "ram_bytes": machine_ram_bytes(), "run_peak_rss_bytes": peak,
                         "builder_peak_rss_bytes": built["peak_rss_bytes"], **res})
            log(f"wan14b: stream {method}: {res['calibrate_export_s']:.0f} s, peak {gib(peak)} GiB for "
                f"{gib(built['bytes'])} GiB of weights")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_csv(rows, out_dir / "calibration_wan14b.csv", info)
    write_md(out_dir / "calibration_wan14b.md", "Wan-14B-shaped checkpoint, streamed calibration and export",
             info, _md_sections(rows, cfg, shape))
    return rows


def _md_sections(rows: list[dict], cfg: dict, shape: dict) -> list[tuple[str, str]]:
    table = [{"method": r["method"], "blocks": r["blocks"], "bf16 weights GiB": gib(r["weights_bytes"]),
              "machine RAM GiB": gib(r["ram_bytes"]), "peak RSS GiB": gib(r["run_peak_rss_bytes"]),
              "peak / weights": round(r["run_peak_rss_bytes"] / r["weights_bytes"], 3),
              "calib+export s": round(r["calibrate_export_s"]), "export GiB": gib(r["export_bytes"]),
              "export / weights": round(r["export_bytes"] / r["weights_bytes"], 3),
              "mean SQNR dB": round(r["mean_sqnr_db"], 2)} for r in rows]
    setup = (f"Model: Wan2.1-14B-shaped (dim {cfg['num_attention_heads'] * cfg['attention_head_dim']}, ffn "
             f"{cfg['ffn_dim']}, {cfg['num_layers']} blocks), random bf16 weights written one block per shard. "
             f"Calibration: {shape['n_samples']} samples, latent {shape['frames']}x{shape['height']}x"
             f"{shape['width']}, {shape['text_len']} text tokens, block-0 inputs synthesised. W8A8 int8 "
             "(per-channel weights, per-token activations), SmoothQuant alpha 0.75. `vidquant.stream`: each "
             "block is read from the safetensors files, calibrated, quantized and written before the next is "
             "read. Peak RSS = the child process's high-water mark over the whole run (import, non-block "
             f"weights, block-0 capture, calibration, export). The builder's own peak: "
             f"{gib(rows[0]['builder_peak_rss_bytes']) if rows else '-'} GiB.\n")
    return [("Runs", setup + "\n" + md_table(table))]


if __name__ == "__main__":
    for row in run():
        print({k: v for k, v in row.items() if not k.startswith("machine")})
