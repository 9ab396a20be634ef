"""Block and denoiser-step benchmark: the quantized runtime (W8A8Linear on the CPU's fastest exact int8 path, with
and without the cross-attention K/V cache) against bf16 and against LLMC's fake-quant evaluation model.

* One Wan block at Wan2.1-1.3B width (``WanTransformerBlock(1536, 8960, 12)``, random weights).
* The whole denoiser step (every block, embeddings and head) at Wan2.1-1.3B width and depth (random weights,
  RTN int8 W8A8 linears built in memory) and on the tiny model (``assets/models/tiny-wan-t2v`` when present,
  else a random one of the same size), where the quantized model is loaded by ``vidquant.runtime`` from a
  real lightx2v export, exactly as ``vidquant infer`` does.

All variants of a row are timed round-robin in one process, so the speed-ups are like-for-like. Every repeat
calls the model with the same text, as the denoising steps of one clip do, so ``w8a8`` (the runtime as ``vidquant
infer`` loads it: conditioning K/V cached) against ``w8a8_uncached`` is what the cache saves per step. On CUDA
(``run(device="cuda")``, ``run_all.py --device cuda``) the fp8 W8A8Linear (``torch._scaled_mm``) is added on GPUs
with fp8 tensor cores (sm89+).
"""

from __future__ import annotations

import copy
import functools
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from common import REPO, RESULTS, log, machine_info, md_table, time_interleaved, write_csv, write_md
from torch import nn

from vidquant.models.block import make_smoothable
from vidquant.models.layout import block_linears
from vidquant.quant import FakeQuantLinear, IntQuantizer, W8A8Linear
from vidquant.runtime.cond_cache import cache_conditioning

DIM, FFN, HEADS, HEAD_DIM, TEXT_LEN = 1536, 8960, 12, 128, 512
TINY_DIR = REPO / "assets" / "models" / "tiny-wan-t2v"
TINY_SIZES = None  # sizes of the random stand-in when TINY_DIR is absent (None: the shipped model's sizes)
VARIANTS = {
    "bf16": "float bf16 model",
    "fake_quant": "LLMC fake-quant (fq weights in bf16, per-token fake-quantized activations)",
    "w8a8_uncached": "W8A8Linear int8 (the CPU's fastest exact int8 path), conditioning K/V recomputed every call",
    "w8a8": "W8A8Linear int8, conditioning K/V cached across calls (the runtime's default)",
    "w8a8_fp8_eager": "W8A8Linear fp8 (torch._scaled_mm)",
}


# ----------------------------------------------------------------------------------------------- models


def _aq() -> IntQuantizer:
    return IntQuantizer(8, symmetric=True, granularity="per_token")


def to_fake_quant(module: nn.Module) -> nn.Module:
    """Every block linear -> LLMC's FakeQuantLinear (int8 per-channel weights, per-token activations)."""
    wq = IntQuantizer(8, symmetric=True, granularity="per_channel")
    for block in _blocks(module):
        for name, lin in block_linears(block).items():
            block.set_submodule(name, FakeQuantLinear.from_linear(lin, wq, _aq()))
    return module


def to_w8a8(module: nn.Module, fmt: str = "int8") -> nn.Module:
    """Every block linear -> W8A8Linear (the runtime's module), quantized RTN from its float weight."""
    for block in _blocks(module):
        for name, lin in block_linears(block).items():
            w8 = W8A8Linear.from_linear(lin, fmt)
            w8.compiled = lin.in_features >= 1024  # as the runtime loader decides (fused kernels at Wan widths)
            block.set_submodule(name, w8)
    return module


def with_cache(module: nn.Module) -> nn.Module:
    """A copy of a W8A8 model with the conditioning K/V cache; every tensor is shared with ``module``."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    cached = copy.deepcopy(module, memo)
    cache_conditioning(cached)
    return cached


def _blocks(module: nn.Module) -> list[nn.Module]:
    return list(module.blocks) if hasattr(module, "blocks") else [module]


def random_block(seed: int = 0) -> nn.Module:
    """A Wan2.1-1.3B-width block, bf16, smoothable (as the runtime builds it), random weights."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    torch.manual_seed(seed)
    block = WanTransformerBlock(DIM, FFN, HEADS, "rms_norm_across_heads", True, 1e-6, None)
    return make_smoothable(block.to(torch.bfloat16)).eval().requires_grad_(False)


def _to(x, device: str):
    """Tensors, and tuples of them (Wan's RoPE), on ``device``."""
    return tuple(t.to(device) for t in x) if isinstance(x, tuple) else x.to(device)


def fp8_supported(device: str) -> bool:
    """fp8 GEMMs (``torch._scaled_mm``) need CUDA sm89+; on a CPU they are emulated (see gemm.md)."""
    return device.startswith("cuda") and torch.cuda.get_device_capability(device) >= (8, 9)


def block_inputs(frames: int, height: int, width: int, seed: int = 0,
                 device: str = "cpu") -> tuple[torch.Tensor, dict]:
    """hidden (1, L, 1536), text (1, 512, 1536), temb (1, 6, 1536) and Wan's RoPE for a latent F x H x W."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    gen = torch.Generator().manual_seed(seed)
    latent = torch.zeros(1, 16, frames, height, width)
    rotary = WanRotaryPosEmbed(HEAD_DIM, (1, 2, 2), 1024)(latent)
    tokens = frames * (height // 2) * (width // 2)
    hidden = torch.randn(1, tokens, DIM, generator=gen).bfloat16()
    kwargs = {"encoder_hidden_states": torch.randn(1, TEXT_LEN, DIM, generator=gen).bfloat16(),
              "temb": (torch.randn(1, 6, DIM, generator=gen) * 0.1).bfloat16(), "rotary_emb": rotary}
    return hidden.to(device), {k: _to(v, device) for k, v in kwargs.items()}


def latent_for_tokens(tokens: int) -> tuple[int, int, int]:
    """A (frames, height, width) latent with ``tokens`` video tokens after the 1x2x2 patching."""
    frames = 1
    while tokens // frames > 64 * 64 and tokens % (frames * 2) == 0:  # at most 128 x 128 pixels of latent
        frames *= 2
    side = int(round((tokens // frames) ** 0.5))
    if frames * side * side != tokens:
        raise ValueError(f"{tokens} tokens is not frames x side^2 for a square latent")
    return frames, 2 * side, 2 * side


# ------------------------------------------------------------------------------------------------ rows


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).norm() / ref.float().norm())


def time_row(label: str, tokens: int, fns: dict[str, Callable[[], torch.Tensor]], repeats: int,
             device: str = "cpu") -> dict:
    """Accuracy against bf16 once, then round-robin timing; one csv row."""
    outs = {k: f() for k, f in fns.items()}
    row: dict = {"model": label, "tokens": tokens}
    for k, out in outs.items():
        if k != "bf16":
            row[f"{k}_rel_err_vs_bf16"] = round(_rel(out, outs["bf16"]), 5)
    if "w8a8" in outs and "w8a8_uncached" in outs:
        row["cached_equals_uncached"] = bool(torch.equal(outs["w8a8"], outs["w8a8_uncached"]))
    del outs
    timings = time_interleaved(fns, warmup=1, repeats=repeats, device=device)
    bf16 = timings["bf16"].median_ms
    for k, t in timings.items():
        row[f"{k}_ms"] = round(t.median_ms, 2)
    for k, t in timings.items():
        if k != "bf16":
            row[f"{k}_speedup_vs_bf16"] = round(bf16 / t.median_ms, 3)
    row["repeats"] = min(t.repeats for t in timings.values())
    log(f"block: {label} L={tokens}: " + ", ".join(f"{k} {t.median_ms:.0f} ms" for k, t in timings.items()))
    return row


def block_rows(tokens_list: list[int], repeats: int, device: str = "cpu") -> list[dict]:
    """One Wan-1.3B-width block, every variant, at each token count."""
    base = random_block()
    variants = {"bf16": base, "fake_quant": to_fake_quant(copy.deepcopy(base)),
                "w8a8_uncached": to_w8a8(copy.deepcopy(base))}
    if fp8_supported(device):
        variants["w8a8_fp8_eager"] = to_w8a8(copy.deepcopy(base), "fp8")
    variants = {k: m.to(device) for k, m in variants.items()}
    variants["w8a8"] = with_cache(variants["w8a8_uncached"])
    rows = []
    with torch.no_grad():
        for tokens in tokens_list:
            hidden, kw = block_inputs(*latent_for_tokens(tokens), device=device)
            fns = {k: functools.partial(m, hidden, **kw) for k, m in variants.items()}
            rows.append(time_row("wan2.1-1.3b block", tokens, fns, repeats, device))
    return rows


def denoiser_inputs(cfg: dict, frames: int, height: int, width: int, text_len: int, seed: int = 0,
                    device: str = "cpu") -> dict:
    """One transformer call's inputs (a latent, a timestep, text embeddings), bf16, drawn on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, cfg["in_channels"], frames, height, width, generator=gen).bfloat16()
    text = torch.randn(1, text_len, cfg["text_dim"], generator=gen).bfloat16()
    return {"hidden_states": hidden.to(device), "timestep": torch.tensor([500.0], device=device),
            "encoder_hidden_states": text.to(device), "return_dict": False}


def _step(model: nn.Module, inputs: dict) -> torch.Tensor:
    """One denoiser call (``return_dict=False`` is in ``inputs``)."""
    return model(**inputs)[0]


def wan13b_step_rows(tokens: int, repeats: int, num_layers: int = 30, device: str = "cpu") -> list[dict]:
    """The whole Wan-1.3B-shaped denoiser step (random weights): bf16 vs W8A8 with and without the K/V cache."""
    from calibration import WAN13B
    from diffusers import WanTransformer3DModel

    cfg = {**WAN13B, "num_layers": num_layers}
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = WanTransformer3DModel(**cfg).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)
    for block in model.blocks:
        make_smoothable(block)
    w8 = to_w8a8(copy.deepcopy(model)).to(device)
    variants = {"bf16": model.to(device), "w8a8_uncached": w8, "w8a8": with_cache(w8)}
    inputs = denoiser_inputs(cfg, *latent_for_tokens(tokens), TEXT_LEN, device=device)
    with torch.no_grad():
        fns = {k: functools.partial(_step, m, inputs) for k, m in variants.items()}
        return [time_row(f"wan2.1-1.3b-shaped denoiser step ({num_layers} blocks)", tokens, fns, repeats,
                         device)]


def tiny_pipeline_dir(work: Path) -> tuple[Path, str]:
    """The shipped tiny T2V pipeline, or a random one of the same size in ``work``."""
    if (TINY_DIR / "model_index.json").is_file():
        return TINY_DIR, "tiny-wan-t2v (trained)"
    from vidquant.models.tiny import TinySizes, make_random_tiny_pipeline_dir

    sizes = TINY_SIZES or TinySizes()
    return make_random_tiny_pipeline_dir("t2v", work / "tiny-t2v", sizes=sizes), "tiny-wan-t2v (random)"


def tiny_step_rows(repeats: int, batch_frames: int = 3, device: str = "cpu") -> list[dict]:
    """The tiny model's denoiser step: float vs the runtime loaded from a lightx2v export vs its fake-quant twin."""
    from diffusers import WanTransformer3DModel

    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.runtime.model import fake_quant_twin, load_quantized_transformer

    with tempfile.TemporaryDirectory(prefix="vidquant_bench_tiny_") as tmp:
        pipe_dir, label = tiny_pipeline_dir(Path(tmp))
        model = WanTransformer3DModel.from_pretrained(pipe_dir / "transformer", torch_dtype=torch.bfloat16)
        model.eval().requires_grad_(False)
        wq = IntQuantizer(8, symmetric=True, granularity="per_channel")
        export = export_lightx2v(copy.deepcopy(model), wq, Path(tmp) / "export")
        runtime = load_quantized_transformer(export, pipe_dir, device, torch.bfloat16, cache_conditioning=False)
    variants = {"bf16": model.to(device), "fake_quant": fake_quant_twin(runtime), "w8a8_uncached": runtime,
                "w8a8": with_cache(runtime)}
    cfg = dict(model.config)
    rows = []
    with torch.no_grad():
        for frames, side in ((batch_frames, 8), (batch_frames, 32)):
            inputs = denoiser_inputs(cfg, frames, side, side, 16, device=device)
            tokens = frames * (side // 2) ** 2
            fns = {k: functools.partial(_step, m, inputs) for k, m in variants.items()}
            rows.append(time_row(f"{label} denoiser step", tokens, fns, repeats, device))
    return rows


def run(block_tokens: list[int] = (1024, 4096), step_tokens: int = 1024, repeats: int = 3,
        out_dir: Path = RESULTS, suffix: str = "", wan13b_layers: int = 30, device: str = "cpu") -> list[dict]:
    """All rows on ``device``; writes ``block{suffix}.csv`` and ``.md``."""
    info = machine_info(device)
    rows = block_rows(list(block_tokens), repeats, device)
    rows += tiny_step_rows(repeats, device=device)
    if step_tokens:
        rows += wan13b_step_rows(step_tokens, max(2, repeats - 1), wan13b_layers, device)
    write_csv(rows, out_dir / f"block{suffix}.csv", info)
    write_md(out_dir / f"block{suffix}.md", "Wan block and denoiser step: W8A8 runtime vs bf16 vs fake-quant",
             info, _md_sections(rows))
    return rows


def _md_sections(rows: list[dict]) -> list[tuple[str, str]]:
    keys = [k for k in VARIANTS if k != "bf16" and any(f"{k}_ms" in r for r in rows)]
    cols = ["model", "tokens", "bf16_ms"] + [f"{k}_speedup_vs_bf16" for k in keys]
    err_cols = ["model", "tokens"] + [f"{k}_rel_err_vs_bf16" for k in keys] + ["cached_equals_uncached"]
    legend = "\n".join(f"- `{k}`: {v}" for k, v in VARIANTS.items() if k == "bf16" or k in keys)
    note = ("Speed-up = bf16 time / variant time (>1: faster than bf16); medians of round-robin repeats. "
            "Relative errors are ||out - out_bf16|| / ||out_bf16|| on the same inputs.\n")
    return [("Speed-up over bf16", note + "\n" + md_table(rows, cols)),
            ("Output error against bf16", md_table(rows, err_cols)), ("Variants", legend + "\n")]


if __name__ == "__main__":
    run()
