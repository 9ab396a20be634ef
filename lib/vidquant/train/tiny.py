"""Train the tiny Wan2.1 T2V and I2V pipelines on procedural clips (``vidquant train-tiny``).

Stages (each timed and logged; seeded, deterministic on the CPU):

1. **VAE** (``AutoencoderKLWan``) as a deterministic autoencoder on the posterior mode, MSE with a heavier
   weight on object pixels (the object covers ~6% of a frame; unweighted, the VAE first learns the background
   and then blends hues). Gate: the task detector on reconstructions of the 32 eval clips must reach
   ``--gate-colour`` / ``--gate-direction`` accuracy, or training stops with an error. The VAE config's
   ``latents_mean`` / ``latents_std`` are then set to per-channel statistics of the training pool's latents.
2. **Cache**: a pool of clips is encoded once: normalised video latents, I2V conditions (mask + latent of the
   first frame followed by zero frames, exactly as ``WanImageToVideoPipeline.prepare_latents``), CLIP image
   embeddings (``pipe.encode_image``) and prompt embeddings (``pipe.encode_prompt``), so training sees what
   generation will see.
3. **T2V transformer**, rectified flow: ``x_t = (1 - t)·x0 + t·noise``, target ``noise - x0`` (UniPC
   ``flow_prediction``), ``t`` logit-normal then shifted like the sampler's sigmas (``--train-shift``,
   the scheduler's ``flow_shift``), timestep ``1000·t``; 10% of prompts dropped to ``""`` (the
   pipeline's negative prompt) for classifier-free guidance; AdamW with warm-up and cosine decay.
4. **I2V transformer**, initialised from the trained T2V one (condition channels and the image branch's value
   projection start at zero, so it starts as the T2V model), same objective with the I2V condition and
   prompts always padded to 512 tokens (``vidquant.models.tiny.I2V_TEXT_LEN``).

Then both pipelines are saved with ``save_pretrained`` (transformer in bf16 to keep the two directories
small), loaded back with ``from_pretrained`` and evaluated with the task metrics; a model card goes in each.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vidquant.data.procedural import BACKGROUND, ProceduralVideoDataset, eval_prompt_set
from vidquant.eval.task import evaluate_pipeline, score_clips
from vidquant.models.tiny import (
    I2V_TEXT_LEN,
    TEXT_LEN,
    TinySizes,
    build_tiny_components,
    count_parameters,
    generation_kwargs,
    save_tiny_pipeline,
)

__all__ = ["TrainConfig", "train_tiny", "train_tiny_main", "i2v_condition", "encode_video"]

log = logging.getLogger("vidquant.train.tiny")
LONG_TEXT_LEN = I2V_TEXT_LEN  # 512: the Wan pipelines' default max_sequence_length
EVAL_TEXT_LENS = {"t2v": (TEXT_LEN, LONG_TEXT_LEN), "i2v": (I2V_TEXT_LEN,)}


@dataclass
class TrainConfig:
    """Everything that determines a training run (the CLI flags)."""

    out: str = "assets/models"
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    vae_steps: int = 1200
    vae_batch: int = 4
    vae_lr: float = 1e-3
    fg_weight: float = 5.0  # loss weight of object pixels relative to background pixels
    gate_colour: float = 0.9
    gate_direction: float = 0.9
    pool: int = 512  # clips encoded once for transformer training
    t2v_steps: int = 2500
    i2v_steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    drop_prompt: float = 0.1
    long_text_frac: float = 0.25  # T2V batches padded to 512 tokens (the rest to 16), so both lengths work
    train_shift: float = 3.0  # t -> s·t / (1 + (s - 1)·t), the same shift as the sampler's flow_shift
    eval_steps: int = 20
    eval_clips: int = 32  # the first N prompts of the eval set (all 32 unless testing the CLI)
    guidance: float = 5.0
    transformer_dtype: str = "bfloat16"  # storage dtype of the shipped transformers
    vae_from: str | None = None  # skip stage 1: load a trained AutoencoderKLWan from this folder (still gated)
    save_vae: str | None = None  # also save the stage-1 VAE here (to reuse it with --vae-from)
    sizes: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- helpers


def _to_model_space(videos: np.ndarray) -> torch.Tensor:
    """B×T×H×W×3 in [0, 1] -> B×3×T×H×W in [-1, 1] (the VAE's input convention)."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).mul(2.0).sub(1.0).contiguous()


def _to_frames(x: torch.Tensor) -> np.ndarray:
    """B×3×T×H×W in [-1, 1] -> B×T×H×W×3 in [0, 1]."""
    return x.detach().float().cpu().clamp(-1, 1).add(1).div(2).permute(0, 2, 3, 4, 1).numpy()


def _lr_lambda(total: int, warmup: int, floor: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``floor`` × the base rate."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


def _optimizer(params: Any, lr: float, steps: int, warmup: int) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, warmup))


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, mininterval=10.0, file=sys.stdout, dynamic_ncols=False, ncols=100)


@torch.no_grad()
def encode_video(vae: Any, videos: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Posterior mode of the VAE for B×3×T×H×W videos in [-1, 1], un-normalised."""
    chunks = [vae.encode(videos[i:i + batch].to(vae.device)).latent_dist.mode()
              for i in range(0, len(videos), batch)]
    return torch.cat(chunks)


def _latent_stats(vae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
    return mean, std


def normalise_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """``(z - latents_mean) / latents_std``: the space the Wan pipelines run the transformer in."""
    mean, std = _latent_stats(vae)
    return (latents - mean.to(latents.device)) * (1.0 / std.to(latents.device))


@torch.no_grad()
def i2v_condition(pipe: Any, images: list, height: int, width: int, num_frames: int,
                  batch: int = 32) -> torch.Tensor:
    """The I2V condition tensor (4 mask channels + normalised latent) for a batch of first frames.

    Batched re-statement of ``WanImageToVideoPipeline.prepare_latents`` (Wan2.1 path, no last image);
    ``tests/test_tiny_models.py`` checks that the two agree.
    """
    vae = pipe.vae
    image = pipe.video_processor.preprocess(images, height=height, width=width).to(torch.float32)
    zeros = image.new_zeros(image.shape[0], image.shape[1], num_frames - 1, height, width)
    video = torch.cat([image.unsqueeze(2), zeros], dim=2)
    latents = normalise_latents(vae, encode_video(vae, video, batch).cpu())
    temporal = pipe.vae_scale_factor_temporal
    mask = torch.ones(len(images), 1, num_frames, latents.shape[-2], latents.shape[-1])
    mask[:, :, 1:] = 0
    first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=temporal)
    mask = torch.cat([first, mask[:, :, 1:]], dim=2)
    mask = mask.view(len(images), -1, temporal, latents.shape[-2], latents.shape[-1]).transpose(1, 2)
    return torch.cat([mask, latents], dim=1)


# ----------------------------------------------------------------------------------------------- VAE


def _object_weight(videos: np.ndarray, fg_weight: float) -> torch.Tensor:
    """Per-pixel loss weight: 1 on the background, ``fg_weight`` on (anti-aliased) object pixels."""
    coverage = np.abs(videos - BACKGROUND).max(axis=-1, keepdims=True)  # 0 on background, ~0.9 on the object
    coverage = np.clip(coverage / 0.5, 0.0, 1.0)
    w = 1.0 + (fg_weight - 1.0) * coverage
    return torch.from_numpy(w.astype(np.float32)).permute(0, 4, 1, 2, 3)


def _clip_batches(seed: int, batch: int) -> Iterator[np.ndarray]:
    """Endless balanced batches of training clips (disjoint stream from the pool and the eval set)."""
    data = ProceduralVideoDataset(seed=seed * 1000 + 1, length=10**9)
    i = 0
    while True:
        yield np.stack([data.spec(j).render() for j in range(i, i + batch)])
        i += batch


def train_vae(vae: Any, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Train the VAE in place; returns the loss history summary."""
    vae.train().requires_grad_(True)
    opt, sched = _optimizer(vae.parameters(), cfg.vae_lr, cfg.vae_steps, cfg.warmup)
    batches = _clip_batches(cfg.seed, cfg.vae_batch)
    losses: list[float] = []
    bar = _progress(cfg.vae_steps, "vae")
    for step in range(cfg.vae_steps):
        clips = next(batches)
        x = _to_model_space(clips).to(device)
        w = _object_weight(clips, cfg.fg_weight).to(device)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        loss = (w * (recon - x) ** 2).sum() / w.expand_as(x).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        _log_step(bar, step, cfg.vae_steps, losses, "vae")
    bar.close()
    vae.eval().requires_grad_(False)
    return {"steps": cfg.vae_steps, "batch": cfg.vae_batch, "loss_first": _mean(losses[:50]),
            "loss_final": _mean(losses[-100:])}


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _log_step(bar: tqdm, step: int, total: int, losses: list[float], name: str) -> None:
    bar.update(1)
    every = max(total // 20, 1)
    if (step + 1) % every == 0 or step + 1 == total:
        avg = _mean(losses[-every:])
        bar.set_postfix(loss=f"{avg:.4f}")
        log.info("%s step %d/%d loss %.4f", name, step + 1, total, avg)


@torch.no_grad()
def vae_gate(vae: Any, device: torch.device) -> dict[str, Any]:
    """Detector accuracy and PSNR on reconstructions of the eval clips (an upper bound for the pipelines)."""
    specs = eval_prompt_set()
    clips = np.stack([s.render() for s in specs])
    x = _to_model_space(clips).to(device)
    recon = _to_frames(vae.decode(encode_video(vae, x)).sample)
    _, summary = score_clips(list(recon), specs)
    mse = float(np.mean((recon - clips) ** 2))
    summary["psnr"] = float(10 * np.log10(1.0 / mse))
    return summary


def _load_vae(vae: Any, folder: str) -> None:
    from diffusers import AutoencoderKLWan

    trained = AutoencoderKLWan.from_pretrained(folder)
    vae.load_state_dict(trained.state_dict())
    vae.requires_grad_(False).eval()


# ----------------------------------------------------------------------------------------------- cache


@dataclass
class Pool:
    """Everything the transformers train on, computed once."""

    latents: torch.Tensor  # N×z×T'×h×w, normalised
    condition: torch.Tensor  # N×(4+z)×T'×h×w (I2V)
    image_embeds: torch.Tensor  # N×L_img×D_clip
    prompt_index: torch.Tensor  # N, index into the prompt embeddings
    prompt_embeds: dict[int, torch.Tensor]  # text length -> P×L×D (row P-1 is "")


@torch.no_grad()
def set_latent_stats(vae: Any, videos: torch.Tensor) -> torch.Tensor:
    """Encode ``videos`` and store per-channel mean / std in the VAE config; returns the raw latents."""
    raw = encode_video(vae, videos).cpu()
    mean = raw.mean(dim=(0, 2, 3, 4))
    std = raw.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
    return raw


@torch.no_grad()
def build_pool(pipe_i2v: Any, cfg: TrainConfig, device: torch.device) -> Pool:
    """Render, encode and embed the training pool with the I2V pipeline's components."""
    data = ProceduralVideoDataset(seed=cfg.seed * 1000 + 2, length=cfg.pool)
    specs = [data.spec(i) for i in range(cfg.pool)]
    videos = _to_model_space(np.stack([s.render() for s in specs]))
    raw = set_latent_stats(pipe_i2v.vae, videos)
    latents = normalise_latents(pipe_i2v.vae, raw)
    first_frames = [s.first_frame() for s in specs]
    size, frames = specs[0].size, specs[0].num_frames
    condition = i2v_condition(pipe_i2v, first_frames, size, size, frames)
    image_embeds = torch.cat([pipe_i2v.encode_image(first_frames[i:i + 64], device).cpu()
                              for i in range(0, len(first_frames), 64)])
    prompts = sorted({s.prompt for s in specs})
    lookup = {p: i for i, p in enumerate(prompts)}
    embeds = {n: _prompt_embeds(pipe_i2v, prompts + [""], n, device) for n in (TEXT_LEN, LONG_TEXT_LEN)}
    return Pool(latents, condition, image_embeds, torch.tensor([lookup[s.prompt] for s in specs]), embeds)


def _prompt_embeds(pipe: Any, prompts: list[str], length: int, device: torch.device) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                   max_sequence_length=length, device=device)
    return embeds.float().cpu()


# ----------------------------------------------------------------------------------------------- transformers


def _flow_batch(pool: Pool, idx: torch.Tensor, gen: torch.Generator, cfg: TrainConfig,
                text_len: int) -> tuple[torch.Tensor, ...]:
    """One rectified-flow batch: (noisy latents, timesteps, target velocity, text embeds)."""
    x0 = pool.latents[idx]
    noise = torch.randn(x0.shape, generator=gen)
    u = torch.sigmoid(torch.randn(len(idx), generator=gen))  # logit-normal
    t = cfg.train_shift * u / (1 + (cfg.train_shift - 1) * u)  # more weight on high noise, as the sampler
    tt = t.view(-1, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    embeds = pool.prompt_embeds[text_len]
    prompt = pool.prompt_index[idx].clone()
    drop = torch.rand(len(idx), generator=gen) < cfg.drop_prompt
    prompt[drop] = embeds.shape[0] - 1  # the "" row: what the pipeline uses as the negative prompt
    return xt, t * 1000.0, noise - x0, embeds[prompt]


def train_transformer(model: Any, pool: Pool, cfg: TrainConfig, steps: int, task: str,
                      device: torch.device) -> dict[str, Any]:
    """Rectified-flow training of a Wan transformer on the cached pool; returns the loss summary."""
    model.train().requires_grad_(True)
    opt, sched = _optimizer(model.parameters(), cfg.lr, steps, cfg.warmup)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + (1 if task == "t2v" else 2))
    losses: list[float] = []
    bar = _progress(steps, task)
    for step in range(steps):
        idx = torch.randint(len(pool.latents), (cfg.batch,), generator=gen)
        long_text = torch.rand(1, generator=gen).item() < cfg.long_text_frac
        text_len = LONG_TEXT_LEN if long_text or task == "i2v" else TEXT_LEN  # I2V: see I2V_TEXT_LEN
        xt, timestep, target, text = _flow_batch(pool, idx, gen, cfg, text_len)
        image = None
        if task == "i2v":
            xt = torch.cat([xt, pool.condition[idx]], dim=1)
            image = pool.image_embeds[idx].to(device)
        pred = model(hidden_states=xt.to(device), timestep=timestep.to(device),
                     encoder_hidden_states=text.to(device), encoder_hidden_states_image=image,
                     return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        _log_step(bar, step, steps, losses, task)
    bar.close()
    model.eval().requires_grad_(False)
    return {"steps": steps, "batch": cfg.batch, "loss_first": _mean(losses[:50]),
            "loss_final": _mean(losses[-200:])}


@torch.no_grad()
def init_i2v_from_t2v(i2v: Any, t2v: Any) -> None:
    """Copy the trained T2V weights into the I2V transformer so that it starts as the T2V model.

    The patch embedding's extra (condition) input channels and the image branch's value projection start at
    zero: the image cross-attention then adds nothing and the condition is ignored until training uses them.
    """
    src = t2v.state_dict()
    for name, param in i2v.state_dict().items():
        if name == "patch_embedding.weight":
            param.zero_()
            param[:, : src[name].shape[1]] = src[name]
        elif name in src and src[name].shape == param.shape:
            param.copy_(src[name])
    for block in i2v.blocks:
        block.attn2.add_v_proj.weight.zero_()
        block.attn2.add_v_proj.bias.zero_()


# ----------------------------------------------------------------------------------------------- driver


def _stage(name: str, timings: dict[str, float]):
    """Context manager that times a stage into ``timings[name]`` (seconds)."""
    class _Timer:
        def __enter__(self) -> None:
            log.info("== %s", name)
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: Any) -> None:
            timings[name] = round(time.perf_counter() - self.t0, 1)
            log.info("== %s done in %.1f s", name, timings[name])
    return _Timer()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_tiny(cfg: TrainConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """Run all stages and write ``<out>/tiny-wan-t2v`` and ``<out>/tiny-wan-i2v``; returns the run summary.

    Torch's global thread count and determinism flag are set for the run and restored afterwards.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    device = torch.device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
        torch.use_deterministic_algorithms(True)
    else:  # speed over bit-exactness on CUDA (TF32 convolutions and matmuls)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        return _train_tiny(cfg, device, argv)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train_tiny(cfg: TrainConfig, device: torch.device, argv: list[str] | None) -> dict[str, Any]:
    from diffusers import WanImageToVideoPipeline, WanPipeline

    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    parts = build_tiny_components("i2v", cfg.seed, **cfg.sizes)
    t2v_model = build_tiny_components("t2v", cfg.seed, **cfg.sizes)["transformer"]
    for name in ("vae", "text_encoder", "image_encoder", "transformer"):
        parts[name].to(device)
    t2v_model.to(device)
    pipe_i2v = WanImageToVideoPipeline(**parts)
    pipe_t2v = WanPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"], vae=parts["vae"],
                           scheduler=parts["scheduler"], transformer=t2v_model)

    summary: dict[str, Any] = {"config": asdict(cfg), "params": {}, "stages": {},
                               "device": _device_name(device)}
    with _stage("vae", timings):
        if cfg.vae_from:
            _load_vae(parts["vae"], cfg.vae_from)
            summary["stages"]["vae"] = {"loaded_from": cfg.vae_from, "loss_first": float("nan"),
                                        "loss_final": float("nan")}
        else:
            summary["stages"]["vae"] = train_vae(parts["vae"], cfg, device)
        gate = vae_gate(parts["vae"], device)
    if cfg.save_vae:
        parts["vae"].save_pretrained(cfg.save_vae)
    summary["stages"]["vae"]["gate"] = gate
    log.info("VAE gate on eval-clip reconstructions: %s", gate)
    if gate["colour_acc"] < cfg.gate_colour or gate["direction_acc"] < cfg.gate_direction:
        raise SystemExit(
            f"VAE gate failed: colour {gate['colour_acc']:.2f} (need {cfg.gate_colour}), direction "
            f"{gate['direction_acc']:.2f} (need {cfg.gate_direction}) on reconstructions of the eval clips. "
            "The transformers cannot beat their VAE; train the VAE longer (--vae-steps) or with a larger "
            "--fg-weight, and check the reconstructions before going on."
        )
    with _stage("cache", timings):
        pool = build_pool(pipe_i2v, cfg, device)
    with _stage("t2v", timings):
        summary["stages"]["t2v"] = train_transformer(t2v_model, pool, cfg, cfg.t2v_steps, "t2v", device)
    with _stage("i2v", timings):
        init_i2v_from_t2v(parts["transformer"], t2v_model)
        summary["stages"]["i2v"] = train_transformer(parts["transformer"], pool, cfg, cfg.i2v_steps, "i2v",
                                                     device)
    train_seconds = time.perf_counter() - t_start

    out = Path(cfg.out)
    dirs = {"t2v": out / "tiny-wan-t2v", "i2v": out / "tiny-wan-i2v"}
    dtype = getattr(torch, cfg.transformer_dtype)
    for task, pipe in (("t2v", pipe_t2v), ("i2v", pipe_i2v)):
        pipe.to("cpu")
        save_tiny_pipeline(pipe, dirs[task], transformer_dtype=dtype)
        summary["params"][task] = {name: count_parameters(m) for name, m in pipe.components.items()
                                   if isinstance(m, torch.nn.Module)}
    with _stage("eval", timings):
        summary["eval"] = {task: evaluate_saved(dirs[task], task, cfg, device) for task in dirs}
    summary["timings_s"] = timings
    summary["train_seconds"] = round(train_seconds, 1)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    summary["command"] = "vidquant train-tiny " + shlex.join(argv if argv is not None else [])
    summary["load_average_end"] = [round(x, 2) for x in os.getloadavg()]  # was the machine shared?
    for task, directory in dirs.items():
        (directory / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (directory / "README.md").write_text(model_card(task, summary))
    log.info("done in %.1f s: %s", summary["total_seconds"], json.dumps(summary["eval"]))
    return summary


def evaluate_saved(directory: Path, task: str, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Load a saved pipeline with ``from_pretrained`` (as shipped); task eval at both text lengths."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    cls = WanPipeline if task == "t2v" else WanImageToVideoPipeline
    pipe = cls.from_pretrained(directory).to(device)
    pipe.set_progress_bar_config(disable=True)
    results: dict[str, Any] = {"transformer_dtype": str(pipe.transformer.dtype).replace("torch.", "")}
    for length in EVAL_TEXT_LENS[task]:
        kwargs = generation_kwargs(task, num_inference_steps=cfg.eval_steps, guidance_scale=cfg.guidance,
                                   max_sequence_length=length)
        specs = eval_prompt_set()[: cfg.eval_clips]
        _, summary = evaluate_pipeline(pipe, task, specs, seed=cfg.seed, **kwargs)
        results[f"text_len_{length}"] = summary
        log.info("%s eval (max_sequence_length=%d): %s", task, length, summary)
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def model_card(task: str, s: dict[str, Any]) -> str:
    """The README.md of one shipped model directory, filled from the run summary."""
    cfg, stages, t = s["config"], s["stages"], s["timings_s"]
    z = asdict(TinySizes(**cfg["sizes"]))
    params, ev, gate = s["params"][task], s["eval"][task], stages["vae"]["gate"]
    cls = "WanPipeline" if task == "t2v" else "WanImageToVideoPipeline"
    image_arg = " image=first_frame," if task == "i2v" else ""
    i2v_cfg = f", in_channels {2 * z['z_dim'] + 4}, image_dim {z['clip_dim']}" if task == "i2v" else ""
    rows = [
        f"| transformer | WanTransformer3DModel | {params['transformer']:,} | hidden "
        f"{z['heads'] * z['head_dim']} ({z['heads']} heads × {z['head_dim']}), {z['layers']} blocks, ffn "
        f"{z['ffn_dim']}, patch (1, 2, 2), freq_dim {z['freq_dim']}{i2v_cfg}; stored in "
        f"{cfg['transformer_dtype']} |",
        f"| vae | AutoencoderKLWan | {params['vae']:,} | base_dim {z['vae_base_dim']}, z_dim {z['z_dim']}, "
        f"dim_mult {list(z['vae_dim_mult'])}, {z['vae_num_res_blocks']} res block; 9×64×64 → "
        f"{z['z_dim']}×3×8×8; latents_mean/std measured on the training pool |",
        f"| text_encoder | UMT5EncoderModel | {params['text_encoder']:,} | d_model {z['text_dim']}, "
        f"{z['text_layers']} layers, frozen at seeded random init; word-level tokenizer (dataset words) |",
    ]
    if task == "i2v":
        rows.append(f"| image_encoder | CLIPVisionModel | {params['image_encoder']:,} | hidden "
                    f"{z['clip_dim']}, {z['clip_layers']} layers, {z['clip_image_size']} px, "
                    f"patch {z['clip_patch']}, frozen random init |")
    rows.append(f"| scheduler | UniPCMultistepScheduler | – | flow_prediction, use_flow_sigmas, flow_shift "
                f"{z['flow_shift']} |")

    def loss(stage: str) -> str:
        return f"{stages[stage]['loss_first']:.4f} → {stages[stage]['loss_final']:.4f}"

    training = [
        f"| VAE (object-weighted MSE, ×{cfg['fg_weight']}) | {cfg['vae_steps']} × {cfg['vae_batch']} | "
        f"{loss('vae')} | {t['vae']:.0f} s |",
        f"| latent cache ({cfg['pool']} clips) | – | – | {t['cache']:.0f} s |",
        f"| T2V transformer | {cfg['t2v_steps']} × {cfg['batch']} | {loss('t2v')} | {t['t2v']:.0f} s |",
        f"| I2V transformer (from T2V) | {cfg['i2v_steps']} × {cfg['batch']} | {loss('i2v')} | "
        f"{t['i2v']:.0f} s |",
        f"| eval of both saved pipelines | – | – | {t['eval']:.0f} s |",
    ]
    metrics = [
        f"| {n} | {_pct(m['colour_acc'])} | {_pct(m['direction_acc'])} | {_pct(m['shape_acc'])} | "
        f"{_pct(m['colour_consistency'])} |"
        for n in EVAL_TEXT_LENS[task] for m in [ev[f"text_len_{n}"]]
    ]
    text_note = (
        f"Trained with prompts padded to {TEXT_LEN} tokens ({_pct(1 - cfg['long_text_frac'])} of batches) "
        f"and to {LONG_TEXT_LEN} (the pipelines' default; the other batches): both lengths are scored below."
        if task == "t2v" else
        f"Use max_sequence_length={I2V_TEXT_LEN} (the default): diffusers' Wan attention takes the last 512 "
        "context tokens as text when image tokens are present, so the model was trained with 512.")
    i2v_note = (" For I2V the first frame fixes the colour, so the colour column is consistency with the "
                "conditioning image." if task == "i2v" else "")
    return "\n".join([
        f"# tiny-wan-{task}: a small Wan2.1 {task.upper()} pipeline trained on procedural clips",
        "",
        "The real Wan2.1 architecture (diffusers classes) at tiny sizes, trained from scratch by "
        "`vidquant train-tiny` so that quantization experiments have a model whose outputs can be scored. "
        "Not a general video model: it draws one coloured square or circle moving across a dark background.",
        "",
        "## Use",
        "",
        "```python",
        f"from diffusers import {cls}",
        f"pipe = {cls}.from_pretrained('assets/models/tiny-wan-{task}')",
        f"out = pipe(prompt='a red square moving left on a dark background',{image_arg} height=64, width=64,",
        f"           num_frames=9, num_inference_steps={cfg['eval_steps']}, "
        f"guidance_scale={cfg['guidance']}, max_sequence_length={EVAL_TEXT_LENS[task][0]}, "
        "output_type='np')",
        "```",
        "",
        text_note,
        "",
        "## Architecture",
        "",
        "| component | class | parameters | config |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "## Data",
        "",
        "Procedural clips (`vidquant.data.procedural`), rendered on the fly: 64×64, 9 frames, grey 0.08 "
        "background, a 16-px square or circle in red / green / blue / yellow moving 28 px left / right / "
        "up / down from a random start; prompts like \"a red square moving left on a dark background\" "
        "(32 combinations). VAE: a fresh stream of clips; transformers: a pool of "
        f"{cfg['pool']} clips encoded once. "
        "The eval set (`eval_prompt_set()`: the 32 combinations at fixed positions) is in neither.",
        "",
        "## Training",
        "",
        "| stage | steps × batch | loss (first 50 → last steps) | time |",
        "| --- | --- | --- | --- |",
        *training,
        "",
        f"Training {s['train_seconds']:.0f} s, whole command {s['total_seconds']:.0f} s "
        f"({s['total_seconds'] / 60:.1f} min) on {s['device']}. AdamW, lr {cfg['lr']} (VAE {cfg['vae_lr']}), "
        f"{cfg['warmup']} warm-up steps then cosine to 0.1×, grad clip 1; rectified flow with t logit-normal "
        f"shifted by {cfg['train_shift']}; {_pct(cfg['drop_prompt'])} of prompts dropped to \"\" for "
        "classifier-free guidance. Deterministic on the CPU for a given seed.",
        "",
        "Command (from the repository root):",
        "",
        "```",
        s["command"],
        "```",
        "",
        *([f"Notes: {s['notes']}", ""] if s.get("notes") else []),
        "## Metrics",
        "",
        f"VAE gate (detector on reconstructions of the 32 eval clips): colour {_pct(gate['colour_acc'])}, "
        f"direction {_pct(gate['direction_acc'])}, shape {_pct(gate['shape_acc'])}, "
        f"PSNR {gate['psnr']:.1f} dB.",
        "",
        f"Task accuracy of this directory loaded with `{cls}.from_pretrained` (transformer "
        f"{ev['transformer_dtype']}), {cfg.get('eval_clips', 32)} eval prompts, {cfg['eval_steps']} steps, "
        f"guidance {cfg['guidance']}, generator seed {cfg['seed']} + i "
        "(`vidquant.eval.task.evaluate_pipeline`):",
        "",
        "| max_sequence_length | colour | direction | shape | colour consistency |",
        "| --- | --- | --- | --- | --- |",
        *metrics,
        "",
        "Colour and direction are read by `vidquant.eval.task.detect` (nearest palette colour of the "
        "foreground, foreground-centroid shift); shape (bounding-box fill) is reported but unreliable on "
        f"blurred generations.{i2v_note}",
        "",
    ])


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="vidquant train-tiny", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=d.out, help="parent folder of tiny-wan-t2v/ and tiny-wan-i2v/")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (never more than cores)")
    for name in ("vae_steps", "vae_batch", "pool", "t2v_steps", "i2v_steps", "batch", "warmup", "eval_steps",
                 "eval_clips"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("vae_lr", "fg_weight", "gate_colour", "gate_direction", "lr", "drop_prompt",
                 "long_text_frac", "train_shift", "guidance"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--vae-from", default=None, help="load the stage-1 VAE from this folder instead")
    p.add_argument("--save-vae", default=None, help="also save the stage-1 VAE to this folder")
    p.add_argument("--transformer-dtype", default=d.transformer_dtype, choices=["float32", "bfloat16"])
    p.add_argument("--sizes", type=json.loads, default={},
                   help='JSON overrides of TinySizes, e.g. \'{"layers": 8}\'')
    return p


def train_tiny_main(argv: list[str] | None = None) -> int:
    """CLI: ``vidquant train-tiny --out assets/models --seed 0 [--device cpu|cuda] [--vae-steps N ...]``
    (``--wan22`` goes to :mod:`vidquant.train.wan22` instead: :func:`vidquant.train.main`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    cfg = TrainConfig(**vars(args))
    train_tiny(cfg, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(train_tiny_main())
