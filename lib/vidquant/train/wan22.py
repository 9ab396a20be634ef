"""Derive the tiny Wan2.2 pipelines from the shipped tiny Wan2.1 T2V (``vidquant train-tiny --wan22``).

Two directories, both fine-tuned from ``assets/models/tiny-wan-t2v`` (its VAE, text encoder, tokenizer and
scheduler are reused unchanged, so git stores those files once):

- ``tiny-wan22-t2v``: the A14B mixture at tiny size. ``WanPipeline`` with ``transformer`` (high-noise expert)
  and ``transformer_2`` (low-noise expert) and ``boundary_ratio`` (Wan2.2-T2V-A14B's 0.875): the pipeline calls
  ``transformer`` at timesteps ``>= boundary_ratio * 1000`` and ``transformer_2`` below. Each expert starts as a
  copy of the tiny T2V transformer and is fine-tuned on its own noise range only: flow time ``t`` (timestep / 1000)
  drawn as in :mod:`vidquant.train.tiny` (logit-normal, shifted) and mapped affinely into ``[boundary, 1]``
  (high) or ``[0, boundary]`` (low).
- ``tiny-wan22-ti2v``: the TI2V-5B recipe at tiny size. ``WanPipeline`` with ``expand_timesteps=True``: one
  transformer for text-to-video and, loaded as ``WanImageToVideoPipeline``, image-to-video by keeping the first
  latent frame clean (timestep 0 on its tokens, per-token timesteps ``B×L`` and so per-token adaLN modulation).
  The transformer keeps ``--ti2v-layers`` of the T2V blocks (size budget) and is fine-tuned on both modes: in
  a fraction ``--ti2v-image-frac`` of the samples the first latent frame is the clean latent, its tokens get
  timestep 0 and are left out of the loss. Unlike the real TI2V-5B it keeps the tiny Wan2.1 VAE (z_dim 16,
  8× spatial): the pipeline mechanics (``expand_timesteps``, first-frame mask) do not depend on the VAE, and a
  48-channel 16× VAE would leave 2×2 tokens per frame at 64×64.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidquant.data.procedural import ProceduralVideoDataset, eval_prompt_set
from vidquant.eval.task import evaluate_pipeline
from vidquant.models.tiny import TEXT_LEN
from vidquant.train.tiny import (
    LONG_TEXT_LEN,
    _log_step,
    _mean,
    _optimizer,
    _progress,
    _to_model_space,
    encode_video,
    normalise_latents,
)

__all__ = ["Wan22TrainConfig", "train_wan22", "train_wan22_main", "expert_time_range", "ti2v_batch"]

log = logging.getLogger("vidquant.train.wan22")
T2V_BOUNDARY = 0.875  # Wan2.2-T2V-A14B's boundary_ratio (I2V-A14B: 0.9)
NAMES = {"t2v": "tiny-wan22-t2v", "ti2v": "tiny-wan22-ti2v"}


@dataclass
class Wan22TrainConfig:
    """Everything that determines a ``--wan22`` run (the CLI flags)."""

    base: str = "assets/models/tiny-wan-t2v"
    out: str = "assets/models"
    seed: int = 0
    threads: int = 2
    pool: int = 256
    expert_steps: int = 300
    ti2v_steps: int = 600
    ti2v_layers: int = 4
    ti2v_image_frac: float = 0.5
    batch: int = 16
    lr: float = 3e-4
    warmup: int = 20
    boundary_ratio: float = T2V_BOUNDARY
    drop_prompt: float = 0.1
    long_text_frac: float = 0.25
    train_shift: float = 3.0
    eval_steps: int = 20
    eval_clips: int = 32
    guidance: float = 5.0


# ----------------------------------------------------------------------------------------------- data


@dataclass
class T2VPool:
    latents: torch.Tensor  # N×z×T'×h×w, normalised with the base VAE's statistics
    prompt_index: torch.Tensor  # N
    prompt_embeds: dict[int, torch.Tensor]  # text length -> P×L×D (last row: "")


@torch.no_grad()
def build_t2v_pool(pipe: Any, cfg: Wan22TrainConfig) -> T2VPool:
    """Render and encode ``cfg.pool`` clips with the base pipeline's VAE and text encoder."""
    data = ProceduralVideoDataset(seed=cfg.seed * 1000 + 22, length=cfg.pool)
    specs = [data.spec(i) for i in range(cfg.pool)]
    videos = _to_model_space(np.stack([s.render() for s in specs]))
    latents = normalise_latents(pipe.vae, encode_video(pipe.vae, videos).cpu())
    prompts = sorted({s.prompt for s in specs})
    lookup = {p: i for i, p in enumerate(prompts)}
    embeds = {}
    for n in (TEXT_LEN, LONG_TEXT_LEN):
        e, _ = pipe.encode_prompt(prompt=prompts + [""], do_classifier_free_guidance=False,
                                  max_sequence_length=n, device="cpu")
        embeds[n] = e.float()
    return T2VPool(latents, torch.tensor([lookup[s.prompt] for s in specs]), embeds)


def expert_time_range(expert: str, boundary: float) -> tuple[float, float]:
    """Flow-time range an expert serves: ``high`` = [boundary, 1], ``low`` = [0, boundary]."""
    return {"high": (boundary, 1.0), "low": (0.0, boundary)}[expert]


def _sample(pool: T2VPool, cfg: Wan22TrainConfig, gen: torch.Generator, t_range: tuple[float, float]):
    """Clean latents, noise, flow time in ``t_range`` and text embeddings for one batch."""
    idx = torch.randint(len(pool.latents), (cfg.batch,), generator=gen)
    x0 = pool.latents[idx]
    noise = torch.randn(x0.shape, generator=gen)
    u = torch.sigmoid(torch.randn(cfg.batch, generator=gen))
    t = cfg.train_shift * u / (1 + (cfg.train_shift - 1) * u)
    t = t_range[0] + (t_range[1] - t_range[0]) * t
    long_text = torch.rand(1, generator=gen).item() < cfg.long_text_frac
    embeds = pool.prompt_embeds[LONG_TEXT_LEN if long_text else TEXT_LEN]
    prompt = pool.prompt_index[idx].clone()
    prompt[torch.rand(cfg.batch, generator=gen) < cfg.drop_prompt] = embeds.shape[0] - 1
    return x0, noise, t, embeds[prompt]


def expert_batch(pool: T2VPool, cfg: Wan22TrainConfig, gen: torch.Generator, t_range: tuple[float, float]):
    """Rectified-flow batch restricted to one expert's noise range: (model kwargs, target, loss mask)."""
    x0, noise, t, text = _sample(pool, cfg, gen, t_range)
    tt = t.view(-1, 1, 1, 1, 1)
    kwargs = {"hidden_states": (1 - tt) * x0 + tt * noise, "timestep": t * 1000.0, "encoder_hidden_states": text}
    return kwargs, noise - x0, None


def ti2v_batch(pool: T2VPool, cfg: Wan22TrainConfig, gen: torch.Generator, patch: tuple[int, int, int]):
    """TI2V batch: per-token timesteps; in image samples the first latent frame is clean with timestep 0.

    The token order is (frame, row, column) after the (1, p, p) patch embedding, as the pipelines'
    ``mask[:, ::2, ::2].flatten()``.
    """
    x0, noise, t, text = _sample(pool, cfg, gen, (0.0, 1.0))
    tt = t.view(-1, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    keep = torch.ones_like(x0[:, :1])  # 1 where the token is denoised, 0 on a clean first frame
    image = torch.rand(cfg.batch, generator=gen) < cfg.ti2v_image_frac
    keep[image, :, 0] = 0
    xt = keep * xt + (1 - keep) * x0
    per_token = keep[:, 0, :: patch[0], :: patch[1], :: patch[2]].flatten(1) * (t.view(-1, 1) * 1000.0)
    kwargs = {"hidden_states": xt, "timestep": per_token, "encoder_hidden_states": text}
    return kwargs, noise - x0, keep


def fit(model: Any, steps: int, cfg: Wan22TrainConfig, batch_fn: Callable, seed: int, name: str) -> dict:
    """Fine-tune ``model`` with a masked velocity MSE on ``batch_fn(gen)`` batches; returns the loss summary."""
    model.train().requires_grad_(True)
    opt, sched = _optimizer(model.parameters(), cfg.lr, steps, cfg.warmup)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = _progress(steps, name)
    for step in range(steps):
        kwargs, target, mask = batch_fn(gen)
        pred = model(**kwargs, return_dict=False)[0].float()
        if mask is None:
            loss = F.mse_loss(pred, target)
        else:
            w = mask.expand_as(target)
            loss = ((pred - target) ** 2 * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        _log_step(bar, step, steps, losses, name)
    bar.close()
    model.eval().requires_grad_(False)
    return {"steps": steps, "batch": cfg.batch, "loss_first": _mean(losses[:20]), "loss_final": _mean(losses[-50:])}


@torch.no_grad()
def keep_blocks(transformer: Any, layers: int) -> tuple[Any, list[int]]:
    """A copy of ``transformer`` with ``layers`` of its blocks, evenly spaced (first and last kept)."""
    total = len(transformer.blocks)
    keep = sorted({int(round(i)) for i in np.linspace(0, total - 1, layers)})
    model = copy.deepcopy(transformer)
    model.blocks = torch.nn.ModuleList([model.blocks[i] for i in keep])
    model.register_to_config(num_layers=len(keep))
    return model, keep


# ----------------------------------------------------------------------------------------------- driver


def train_wan22(cfg: Wan22TrainConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """Write ``<out>/tiny-wan22-t2v`` and ``<out>/tiny-wan22-ti2v``; returns the run summary."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train_wan22(cfg, argv)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train_wan22(cfg: Wan22TrainConfig, argv: list[str] | None) -> dict[str, Any]:
    from diffusers import WanPipeline

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    base = WanPipeline.from_pretrained(cfg.base, torch_dtype=torch.float32, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    pool = build_t2v_pool(base, cfg)
    timings["cache"] = round(time.perf_counter() - t0, 1)
    stages: dict[str, Any] = {}
    experts = {}
    for i, expert in enumerate(("high", "low")):
        t1 = time.perf_counter()
        model = copy.deepcopy(base.transformer)
        rng = expert_time_range(expert, cfg.boundary_ratio)
        stages[expert] = fit(model, cfg.expert_steps, cfg, lambda g, r=rng: expert_batch(pool, cfg, g, r),
                             cfg.seed * 7919 + 10 + i, f"{expert}-noise expert")
        stages[expert]["t_range"] = rng
        experts[expert] = model
        timings[expert] = round(time.perf_counter() - t1, 1)
    t1 = time.perf_counter()
    ti2v, kept = keep_blocks(base.transformer, cfg.ti2v_layers)
    patch = tuple(ti2v.config.patch_size)
    stages["ti2v"] = fit(ti2v, cfg.ti2v_steps, cfg, lambda g: ti2v_batch(pool, cfg, g, patch),
                         cfg.seed * 7919 + 20, "ti2v")
    stages["ti2v"]["blocks_kept"] = kept
    timings["ti2v"] = round(time.perf_counter() - t1, 1)
    train_seconds = time.perf_counter() - t0

    out = Path(cfg.out)
    dirs = {task: out / name for task, name in NAMES.items()}
    parts = {k: getattr(base, k) for k in ("tokenizer", "text_encoder", "vae", "scheduler")}
    bf16 = torch.bfloat16
    WanPipeline(**parts, transformer=experts["high"].to(bf16), transformer_2=experts["low"].to(bf16),
                boundary_ratio=cfg.boundary_ratio).save_pretrained(dirs["t2v"], safe_serialization=True)
    WanPipeline(**parts, transformer=ti2v.to(bf16), expand_timesteps=True).save_pretrained(
        dirs["ti2v"], safe_serialization=True)
    for directory in dirs.values():  # the base's tokenizer files as they are (save_pretrained adds defaults)
        shutil.copytree(Path(cfg.base) / "tokenizer", directory / "tokenizer", dirs_exist_ok=True)
    t1 = time.perf_counter()
    evals = {"t2v": {"t2v": evaluate_dir(dirs["t2v"], "t2v", cfg)},
             "ti2v": {mode: evaluate_dir(dirs["ti2v"], mode, cfg) for mode in ("t2v", "i2v")}}
    timings["eval"] = round(time.perf_counter() - t1, 1)
    summary = {"config": asdict(cfg), "stages": stages, "eval": evals, "timings_s": timings,
               "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - t0, 1),
               "command": "vidquant train-tiny " + shlex.join(argv if argv is not None else ["--wan22"]),
               "load_average_end": [round(x, 2) for x in os.getloadavg()],
               "base_eval": {"t2v": evaluate_dir(Path(cfg.base), "t2v", cfg)}}
    for task, directory in dirs.items():
        (directory / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (directory / "README.md").write_text(model_card(task, summary))
    log.info("done in %.1f s: %s", summary["total_seconds"], json.dumps(evals))
    return summary


def evaluate_dir(directory: Path, mode: str, cfg: Wan22TrainConfig) -> dict[str, float]:
    """Task accuracy of a saved directory, loaded as shipped (``mode`` i2v: as ``WanImageToVideoPipeline``)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    cls = WanPipeline if mode == "t2v" else WanImageToVideoPipeline
    pipe = cls.from_pretrained(directory, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    _, summary = evaluate_pipeline(pipe, mode, eval_prompt_set()[: cfg.eval_clips], seed=cfg.seed,
                                   num_inference_steps=cfg.eval_steps, guidance_scale=cfg.guidance,
                                   max_sequence_length=TEXT_LEN)
    log.info("%s (%s) eval: %s", directory.name, mode, summary)
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _row(label: str, m: dict) -> str:
    return (f"| {label} | {_pct(m['colour_acc'])} | {_pct(m['direction_acc'])} | {_pct(m['shape_acc'])} | "
            f"{_pct(m['colour_consistency'])} |")


def model_card(task: str, s: dict[str, Any]) -> str:
    """README.md of one directory, filled from the run summary."""
    cfg, st, t = s["config"], s["stages"], s["timings_s"]

    def loss(k: str) -> str:
        return f"{st[k]['loss_first']:.4f} → {st[k]['loss_final']:.4f}"

    if task == "t2v":
        title = "tiny-wan22-t2v: a two-expert (Wan2.2-A14B-style) T2V mixture at tiny size"
        what = [
            f"`WanPipeline` with `transformer` (high-noise expert) and `transformer_2` (low-noise expert), "
            f"`boundary_ratio` {cfg['boundary_ratio']} (as Wan2.2-T2V-A14B): diffusers calls `transformer` at "
            f"timesteps ≥ {cfg['boundary_ratio'] * 1000:.0f} and `transformer_2` below. Both experts started as "
            "copies of `assets/models/tiny-wan-t2v`'s transformer (6 blocks, hidden 256, bf16) and were "
            "fine-tuned only on their own noise range (flow time t = timestep/1000, logit-normal shifted by "
            f"{cfg['train_shift']} and mapped into the range): high [{cfg['boundary_ratio']}, 1], low "
            f"[0, {cfg['boundary_ratio']}]. VAE, text encoder, tokenizer and scheduler are tiny-wan-t2v's, "
            "byte for byte.",
        ]
        training = [f"| high-noise expert | {cfg['expert_steps']} × {cfg['batch']} | {loss('high')} | "
                    f"{t['high']:.0f} s |",
                    f"| low-noise expert | {cfg['expert_steps']} × {cfg['batch']} | {loss('low')} | "
                    f"{t['low']:.0f} s |"]
        metrics = [_row("tiny-wan22-t2v (both experts)", s["eval"]["t2v"]["t2v"]),
                   _row("tiny-wan-t2v (the base, one model)", s["base_eval"]["t2v"])]
        use = ["from diffusers import WanPipeline",
               "pipe = WanPipeline.from_pretrained('assets/models/tiny-wan22-t2v')",
               "out = pipe(prompt='a red square moving left on a dark background', height=64, width=64,",
               "           num_frames=9, num_inference_steps=20, guidance_scale=5.0, max_sequence_length=16, "
               "output_type='np')"]
    else:
        title = "tiny-wan22-ti2v: a TI2V-5B-style (expand_timesteps) pipeline at tiny size"
        what = [
            "`WanPipeline` with `expand_timesteps=True` (as Wan2.2-TI2V-5B): the transformer gets one timestep per "
            "token (B×L), hence per-token adaLN modulation (a 4-D `temb`). Loaded as `WanImageToVideoPipeline` "
            "it is image-to-video: the first latent frame is the encoded image, its tokens get timestep 0. "
            f"The transformer keeps blocks {st['ti2v']['blocks_kept']} of tiny-wan-t2v's 6 "
            f"({cfg['ti2v_layers']} blocks, hidden 256, bf16; fewer blocks for the repository's size budget) and "
            f"was fine-tuned on both modes ({_pct(cfg['ti2v_image_frac'])} of samples with a clean first frame "
            "at timestep 0, left out of the loss).",
            "",
            "**Short fine-tune, not a full train.** Unlike the real TI2V-5B this keeps the tiny Wan2.1 VAE "
            "(z_dim 16, 8× spatial, tiny-wan-t2v's, byte for byte) instead of a 48-channel 16× Wan2.2 VAE: "
            "diffusers' TI2V mechanics do not depend on the VAE, and a 16× VAE would leave 2×2 tokens per "
            "frame at 64×64. The transformer's in/out channels follow the VAE (16).",
        ]
        training = [f"| TI2V transformer (from tiny-wan-t2v) | {cfg['ti2v_steps']} × {cfg['batch']} | "
                    f"{loss('ti2v')} | {t['ti2v']:.0f} s |"]
        metrics = [_row("text-to-video (WanPipeline)", s["eval"]["ti2v"]["t2v"]),
                   _row("image-to-video (WanImageToVideoPipeline)", s["eval"]["ti2v"]["i2v"]),
                   _row("tiny-wan-t2v (the base, text-to-video)", s["base_eval"]["t2v"])]
        use = ["from diffusers import WanImageToVideoPipeline, WanPipeline",
               "t2v = WanPipeline.from_pretrained('assets/models/tiny-wan22-ti2v')",
               "i2v = WanImageToVideoPipeline.from_pretrained('assets/models/tiny-wan22-ti2v')",
               "out = i2v(image=first_frame, prompt='a red square moving left on a dark background', height=64,",
               "          width=64, num_frames=9, num_inference_steps=20, guidance_scale=5.0, "
               "max_sequence_length=16, output_type='np')"]
    return "\n".join([
        f"# {title}", "", *what, "",
        "Not a general video model: like tiny-wan-t2v it draws one coloured square or circle moving across a "
        "dark background (procedural clips, `vidquant.data.procedural`). It exists so that Wan2.2 quantization "
        "(per-expert calibration, two-checkpoint export, the MoE runtime) runs and is scored on a CPU.", "",
        "## Use", "", "```python", *use, "```", "",
        "## Training", "",
        "| stage | steps × batch | loss (first 20 → last 50 steps) | time |", "| --- | --- | --- | --- |",
        f"| latent cache ({cfg['pool']} clips, base VAE and text encoder) | – | – | {t['cache']:.0f} s |",
        *training, f"| eval | – | – | {t['eval']:.0f} s |", "",
        f"AdamW, lr {cfg['lr']}, {cfg['warmup']} warm-up steps then cosine to 0.1×, grad clip 1; rectified flow "
        f"(target noise − x0); {_pct(cfg['drop_prompt'])} of prompts dropped to \"\" for classifier-free guidance; "
        f"{_pct(cfg['long_text_frac'])} of batches padded to 512 tokens, the rest to 16. Deterministic on the CPU "
        f"for a given seed. Whole command {s['total_seconds']:.0f} s on a shared 2-core CPU (load average at the "
        f"end {s['load_average_end']}).", "",
        "Command (from the repository root, after tiny-wan-t2v exists):", "", "```", s["command"], "```", "",
        "## Metrics", "",
        f"Task accuracy, {cfg['eval_clips']} eval prompts (`eval_prompt_set()`), {cfg['eval_steps']} steps, "
        f"guidance {cfg['guidance']}, max_sequence_length 16, generator seed {cfg['seed']} + i "
        "(`vidquant.eval.task.evaluate_pipeline`), each directory loaded with `from_pretrained`:", "",
        "| model | colour | direction | shape | colour consistency |", "| --- | --- | --- | --- | --- |",
        *metrics, "",
        "Colour and direction are read by `vidquant.eval.task.detect`; shape is reported but unreliable on "
        "blurred generations. For image-to-video the first frame fixes the colour.", "",
    ])


def _parser() -> argparse.ArgumentParser:
    d = Wan22TrainConfig()
    p = argparse.ArgumentParser(prog="vidquant train-tiny --wan22", description=__doc__.split("\n")[0])
    p.add_argument("--base", default=d.base, help="the tiny Wan2.1 T2V directory to start from")
    p.add_argument("--out", default=d.out, help="parent folder of tiny-wan22-t2v/ and tiny-wan22-ti2v/")
    for name in ("seed", "threads", "pool", "expert_steps", "ti2v_steps", "ti2v_layers", "batch", "warmup",
                 "eval_steps", "eval_clips"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("ti2v_image_frac", "lr", "boundary_ratio", "drop_prompt", "long_text_frac", "train_shift",
                 "guidance"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    return p


def train_wan22_main(argv: list[str]) -> int:
    """CLI: ``vidquant train-tiny --wan22 [--base DIR] [--out DIR] [--expert-steps N ...]``."""
    args = _parser().parse_args(argv)
    from vidquant.models.loading import check_task, inspect_checkpoint

    check_task(inspect_checkpoint(args.base), "WanT2V")  # before any work: a tiny Wan2.1 T2V to start from
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    train_wan22(Wan22TrainConfig(**vars(args)), ["--wan22", *argv])
    return 0
