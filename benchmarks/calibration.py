"""Calibration benchmark: wall time and peak resident memory of RTN, SmoothQuant, AWQ and GPTQ on a
Wan2.1-1.3B-shaped transformer with random weights, in memory (``run_blockwise`` + ``export_lightx2v``) and
streamed from disk (``vidquant.stream``), against model depth.

The checkpoints are built with random init and ``save_pretrained`` (bf16) into a temporary folder. The text
encoder and VAE are bypassed: block 0's inputs are computed by the transformer's own embeddings from
synthetic latents, timesteps and text embeddings (``capture_block0_inputs``), so the calibration sees the
real Wan block interface at a small resolution. Every run is a fresh process, so its peak RSS is its own.

Bound on peak memory (what "never holds the model twice" means in numbers):

    bound = baseline + resident weights + one block's working set + activations

* baseline: the process after importing torch/diffusers (measured);
* resident weights: the whole checkpoint in memory mode, the non-block tensors when streaming;
* one block's working set: the block being calibrated, the engine's copy of its original linear weights, and
  four fp32 copies of the largest linear (the error statistics and the quantizer work in fp32);
* activations: the captured block-0 inputs twice (this block's inputs and the next block's) plus one block's
  cached linear inputs (computed from the shapes).

GPTQ's Hessians and AWQ's search buffers come on top: their scratch is reported as the difference to RTN.
The bound is for the calibration phase; in memory mode the export (``export_lightx2v``) is measured on its own,
as it builds the whole quantized state dict before writing it.

Time budget: ``make bench`` runs RTN and SmoothQuant on the full 30 blocks, AWQ and GPTQ on 8 blocks (on 2
cores they take about 6 and 15 s per block: 3 and 7.5 minutes for 30, in each mode) with the 30-block time
extrapolated from the per-block time; ``--full-calibration`` runs them on 30 blocks too
(results/benchmarks/calibration_full.md).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, gib, log, machine_info, md_table, run_in_subprocess, write_csv, write_md

#: Wan2.1-T2V-1.3B's transformer config (depth varies).
WAN13B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
              out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
METHODS = ("RTN", "SmoothQuant", "Awq", "GPTQ")


# ------------------------------------------------------------------------------------------ checkpoints


def build_checkpoints(root: str, depths: list[int], width: dict | None = None, seed: int = 0) -> dict:
    """Random-init bf16 transformers of each depth, ``save_pretrained`` under ``root/L<depth>`` (child process)."""
    from diffusers import WanTransformer3DModel

    cfg = {**WAN13B, **(width or {})}
    out = {}
    for depth in depths:
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: the fp32 model is never materialised
        try:
            model = WanTransformer3DModel(**{**cfg, "num_layers": depth})
        finally:
            torch.set_default_dtype(previous)
        folder = Path(root) / f"L{depth}"
        model.save_pretrained(folder)
        out[str(depth)] = str(folder)
        del model
    return {"folders": out}


def checkpoint_bytes(folder: Path) -> int:
    """Bytes of the safetensors files (the bf16 weights)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


# ------------------------------------------------------------------------------------------ calibration


def denoiser_inputs(n_samples: int, frames: int, height: int, width: int, text_len: int, text_dim: int,
                    in_channels: int = 16, seed: int = 0) -> list[dict]:
    """Synthetic transformer inputs: latents (1, C, F, H, W), a timestep per sample (high to low noise,
    cond/uncond pairs share it), text embeddings (1, text_len, text_dim). All bf16 but the timestep."""
    gen = torch.Generator().manual_seed(seed)
    steps = max(1, n_samples // 2)
    out = []
    for i in range(n_samples):
        t = 999.0 - (i // 2) * (998.0 / max(1, steps - 1)) if steps > 1 else 999.0
        out.append({"hidden_states": torch.randn(1, in_channels, frames, height, width, generator=gen).bfloat16(),
                    "timestep": torch.tensor([t]),
                    "encoder_hidden_states": torch.randn(1, text_len, text_dim, generator=gen).bfloat16()})
    return out


def _quantizers(method: str):
    from vidquant.config import VideoGenQuant
    from vidquant.quant import build_quantizer

    special = {"alpha": 0.75} if method == "SmoothQuant" else {}
    vg = VideoGenQuant(method=method, weight={"bit": 8, "symmetric": True, "granularity": "per_channel"},
                       act={"bit": 8, "symmetric": True, "granularity": "per_token"}, special=special)
    return vg, build_quantizer(vg.weight), build_quantizer(vg.act)


def calibrate_once(checkpoint: str, mode: str, method: str, out_dir: str, n_samples: int = 2, frames: int = 4,
                   height: int = 16, width: int = 16, text_len: int = 512) -> dict:
    """One calibration + export, in memory or streamed (run in a child process by :func:`run_case`)."""
    from common import peak_rss_bytes, reset_peak_rss, rss_bytes

    from vidquant.algos.engine import build_algorithms, run_blockwise
    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.stream import CheckpointReader, capture_block0_inputs, load_non_block, stream_quantize
    from vidquant.stream import transformer_config as read_config

    torch.manual_seed(0)
    vg, wq, aq = _quantizers(method)
    config = read_config(checkpoint)
    inputs = denoiser_inputs(n_samples, frames, height, width, text_len, config["text_dim"], config["in_channels"])
    algos = build_algorithms(vg.methods, vg.special_for)
    t0 = time.perf_counter()
    if mode == "memory":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(checkpoint, torch_dtype=torch.bfloat16)
        calib = capture_block0_inputs(model, inputs)
        loaded_rss, load_peak = rss_bytes(), peak_rss_bytes()
        reset_peak_rss()  # from here on: the calibration's own peak
        t1 = time.perf_counter()
        res = run_blockwise(model, calib, algos, wq, aq, "cpu", progress=False)
        calib_peak = peak_rss_bytes()
        reset_peak_rss()  # the export's own peak (export_lightx2v builds the whole quantized state dict)
        export_lightx2v(model, wq, out_dir, weight_qparams=res.weight_qparams)
        export_peak = peak_rss_bytes()
    else:
        reader = CheckpointReader(checkpoint)
        calib = capture_block0_inputs(load_non_block(reader, config), inputs)
        loaded_rss, load_peak = rss_bytes(), peak_rss_bytes()
        reset_peak_rss()
        t1 = time.perf_counter()
        res = stream_quantize(checkpoint, calib, algos, wq, aq, out_dir, progress=False).blockwise
        calib_peak, export_peak = peak_rss_bytes(), None  # calibration and export are interleaved
    t2 = time.perf_counter()
    tokens = calib.hidden_states[0].shape[1]
    return {"load_s": t1 - t0, "calibrate_export_s": t2 - t1, "rss_after_load_bytes": loaded_rss,
            "load_peak_rss_bytes": load_peak, "calib_peak_rss_bytes": calib_peak, "export_peak_rss_bytes": export_peak,
            "calib_bytes": calib.nbytes, "tokens": tokens, "samples": len(calib),
            "mean_sqnr_db": sum(r["sqnr_db"] for r in res.layer_rows) / len(res.layer_rows)}


# ---------------------------------------------------------------------------------------------- bound


def block_bytes(cfg: dict) -> int:
    """One block's float weights (bf16 linears and norms, fp32 modulation table and norm2)."""
    d, f = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"]
    linear = 8 * (d * d + d) + (d * f + f) + (f * d + d)
    return 2 * linear + 2 * 4 * d + 4 * (6 * d + 2 * d)  # + q/k rms norms (bf16) + table and norm2 (fp32)


def linear_input_bytes(cfg: dict, tokens: int, text_len: int, samples: int) -> int:
    """The engine's cache of one block's distinct linear inputs (bf16) over all samples."""
    d, f = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"]
    per_sample = 5 * tokens * d + tokens * f + text_len * d  # qkv, o, cross-q, cross-o, ffn-up; ffn-down; text k/v
    return 2 * per_sample * samples


def fp32_scratch_bytes(cfg: dict) -> int:
    """Four fp32 copies of the largest block linear: the per-layer error statistics and the weight quantizer
    work in fp32 on one linear at a time (original, fake-quantized, and the quantizer's temporaries)."""
    d, f = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"]
    return 4 * 4 * d * f


def bound_bytes(row: dict, cfg: dict, text_len: int) -> int:
    """The module docstring's bound for one run's calibration phase."""
    resident = row["weights_bytes"] if row["mode"] == "memory" else row["non_block_bytes"]
    acts = 2 * row["calib_bytes"] + linear_input_bytes(cfg, row["tokens"], text_len, row["samples"])
    working_set = 2 * block_bytes(cfg) + fp32_scratch_bytes(cfg)
    return row["baseline_rss_bytes"] + resident + working_set + acts


# -------------------------------------------------------------------------------------------- driver


def run_case(folder: Path, mode: str, method: str, depth: int, cfg: dict, work: Path, shape: dict) -> dict:
    """One child-process run and its row."""
    out_dir = work / f"out_{mode}_{method}_{depth}"
    res = run_in_subprocess("calibration", "calibrate_once",
                            {"checkpoint": str(folder), "mode": mode, "method": method, "out_dir": str(out_dir),
                             **shape})
    shutil.rmtree(out_dir, ignore_errors=True)
    weights = checkpoint_bytes(folder)
    row = {"mode": mode, "method": method, "blocks": depth, "weights_bytes": weights,
           "non_block_bytes": weights - depth * block_bytes(cfg), **res}
    row["bound_bytes"] = bound_bytes(row, cfg, shape["text_len"])
    return row


def plan(depths: list[int], methods: list[str], stream_methods: list[str] | None,
         short_methods: dict[str, int]) -> list[tuple[str, str, int]]:
    """Which (mode, method, depth) runs: every method in memory mode at full depth (or at the depth given in
    ``short_methods``), the ``stream_methods`` (None: all) streamed at full depth, RTN in both modes at every
    other depth."""
    full = max(depths)
    runs = [("memory", m, short_methods.get(m, full)) for m in methods]
    runs += [("stream", m, short_methods.get(m, full)) for m in methods
             if stream_methods is None or m in stream_methods]
    runs += [(mode, "RTN", d) for d in depths if d != full for mode in ("memory", "stream")]
    return runs


def run(depths: list[int] = (8, 16, 30), methods: list[str] = METHODS, width: dict | None = None,
        shape: dict | None = None, out_dir: Path = RESULTS, suffix: str = "",
        stream_methods: list[str] | None = None, keep_checkpoint: dict | None = None,
        short_methods: dict[str, int] | None = None) -> list[dict]:
    """Build the checkpoints, run the plan, write ``calibration{suffix}.csv/.md``.

    ``stream_methods``: the methods also run streamed at full depth (None: all). ``keep_checkpoint``: a dict
    that receives the deepest checkpoint's folder (``"checkpoint"``) and a ``"cleanup"`` callable instead of
    the folder being deleted here (the size benchmark reuses it). ``short_methods``: method -> depth to run it
    at instead of the full depth (its full-depth time is then extrapolated).
    """
    cfg = {**WAN13B, **(width or {})}
    shape = {"n_samples": 2, "frames": 4, "height": 16, "width": 16, "text_len": 512, **(shape or {})}
    info = machine_info("cpu")
    work = Path(tempfile.mkdtemp(prefix="vidquant_bench_calib_"))
    rows: list[dict] = []
    try:
        t0 = time.perf_counter()
        built = run_in_subprocess("calibration", "build_checkpoints",
                                  {"root": str(work), "depths": list(depths), "width": width})
        log(f"calibration: built {len(depths)} random checkpoints in {time.perf_counter() - t0:.0f} s")
        runs = plan(list(depths), list(methods), stream_methods, short_methods or {})
        for i, (mode, method, depth) in enumerate(runs):
            row = run_case(Path(built["folders"][str(depth)]), mode, method, depth, cfg, work, shape)
            row["full_depth_s_estimate"] = row["calibrate_export_s"] * max(depths) / depth
            rows.append(row)
            log(f"calibration {i + 1}/{len(runs)} {mode} {method} {depth} blocks: "
                f"{row['calibrate_export_s']:.1f} s, peak {gib(row['peak_rss_bytes'])} GiB")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if keep_checkpoint is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        keep_checkpoint["checkpoint"] = Path(built["folders"][str(max(depths))])
        keep_checkpoint["cleanup"] = lambda: shutil.rmtree(work, ignore_errors=True)
    _add_scratch(rows)
    write_csv(rows, out_dir / f"calibration{suffix}.csv", info)
    write_md(out_dir / f"calibration{suffix}.md", "Calibration: time and peak memory, in memory vs streamed",
             info, _md_sections(rows, cfg, shape))
    return rows


def _add_scratch(rows: list[dict]) -> None:
    """Peak above the RTN run of the same mode and depth (the algorithm's own buffers)."""
    rtn = {(r["mode"], r["blocks"]): r["calib_peak_rss_bytes"] for r in rows if r["method"] == "RTN"}
    for r in rows:
        base = rtn.get((r["mode"], r["blocks"]))
        r["scratch_vs_rtn_bytes"] = None if base is None else r["calib_peak_rss_bytes"] - base


def _md_sections(rows: list[dict], cfg: dict, shape: dict) -> list[tuple[str, str]]:
    table = []
    full = max(r["blocks"] for r in rows) if rows else 0
    for r in rows:
        est = r["full_depth_s_estimate"] if r["blocks"] != full else None
        table.append({"mode": r["mode"], "method": r["method"], "blocks": r["blocks"],
                      "calib+export s": round(r["calibrate_export_s"], 1),
                      f"est. {full} blocks s": None if est is None else round(est, 0),
                      "load s": round(r["load_s"], 1), "weights GiB": gib(r["weights_bytes"]),
                      "baseline GiB": gib(r["baseline_rss_bytes"]), "load peak GiB": gib(r["load_peak_rss_bytes"]),
                      "calib peak GiB": gib(r["calib_peak_rss_bytes"]), "bound GiB": gib(r["bound_bytes"]),
                      "calib peak / bound": round(r["calib_peak_rss_bytes"] / r["bound_bytes"], 3),
                      "export peak GiB": None if r["export_peak_rss_bytes"] is None
                      else gib(r["export_peak_rss_bytes"]),
                      "scratch vs RTN GiB": None if r["scratch_vs_rtn_bytes"] is None
                      else gib(r["scratch_vs_rtn_bytes"]),
                      "mean SQNR dB": round(r["mean_sqnr_db"], 2)})
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    tokens = rows[0]["tokens"] if rows else "?"
    setup = (f"Model: Wan2.1-1.3B-shaped (dim {d}, ffn {cfg['ffn_dim']}, {cfg['num_attention_heads']} heads), random "
             f"weights, bf16 checkpoint. Calibration: {shape['n_samples']} samples (1 prompt, cond + uncond), "
             f"latent {shape['frames']}x{shape['height']}x{shape['width']} -> {tokens} video tokens, "
             f"{shape['text_len']} text tokens; block-0 inputs synthesised (text encoder and VAE bypassed). "
             f"W8A8 int8 (per-channel weights, per-token activations); SmoothQuant alpha 0.75; AWQ and GPTQ with "
             f"the repo defaults. One block: {gib(block_bytes(cfg))} GiB.\n\n"
             "Peaks are RSS high-water marks, reset between phases: 'load' = from_pretrained (memory mode; "
             "safetensors are memory-mapped, so pages count as they are touched) or the non-block tensors "
             "(stream), plus the block-0 capture; 'calib' = run_blockwise (memory) or the whole streamed "
             "calibration + export (stream); 'export' = export_lightx2v alone (memory mode). "
             "bound = baseline + resident weights (all of them in memory mode, the non-block ones when "
             "streaming) + one block's working set (the block, the engine's copy of its linear weights, 4 fp32 "
             "copies of the largest linear) + activations (block-0 inputs twice + one block's linear-input "
             "cache). 'scratch vs RTN' = calib peak minus the RTN calib peak of the same mode and depth. "
             "Runs on fewer blocks than the full model carry a linear estimate of the full-depth time.\n")
    return [("Runs", setup + "\n" + md_table(table))]


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--depths", type=int, nargs="*", default=[8, 16, 30])
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    args = p.parse_args()
    print(json.dumps(run(args.depths, args.methods), indent=1, default=str)[:2000])


if __name__ == "__main__":
    main()
