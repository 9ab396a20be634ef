"""Tiny Wan2.1 pipelines with the real diffusers architecture, small enough to train on a CPU.

Every component is a stock diffusers / transformers class built from a small config, so a tiny pipeline
saves and loads exactly like Wan-AI/Wan2.1-*-Diffusers (``WanPipeline.from_pretrained(dir)``):

- ``AutoencoderKLWan`` (causal 3-D VAE, 8× spatial / 4× temporal compression, as Wan),
- ``WanTransformer3DModel`` (T2V; for I2V with image cross-attention and ``in_channels = 2·z_dim + 4``),
- ``UMT5EncoderModel`` frozen at a seeded random init, with a word-level tokenizer over the procedural
  dataset's vocabulary (a random frozen encoder keeps the 32 prompts separable, which is all the task needs),
- for I2V a small ``CLIPVisionModel`` (also frozen random) and a local ``CLIPImageProcessor``,
- ``UniPCMultistepScheduler`` configured for flow matching (``flow_prediction``, flow sigmas, ``flow_shift``).

The trained weights live in ``assets/models/tiny-wan-{t2v,i2v}`` (see ``vidquant.train.tiny``).
Generate with :func:`generation_kwargs`: the T2V model was trained mostly on prompts padded to
:data:`TEXT_LEN` tokens (and partly to 512); the I2V model needs 512 (:data:`I2V_TEXT_LEN`), because
diffusers' Wan attention splits image from text tokens by assuming 512 text tokens.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from vidquant.data.procedural import FRAME_SIZE, NUM_FRAMES, VOCABULARY

__all__ = [
    "GENERATION_DEFAULTS",
    "I2V_TEXT_LEN",
    "SPECIAL_TOKENS",
    "TEST_SIZES",
    "TEXT_LEN",
    "TinySizes",
    "build_tiny_components",
    "build_tiny_pipeline",
    "build_tokenizer",
    "count_parameters",
    "generation_kwargs",
    "make_random_tiny_pipeline_dir",
    "make_random_tiny_wan22_dir",
    "save_tiny_pipeline",
    "wan22_vae_model",
]

TEXT_LEN = 16  # T2V prompts are padded to this many tokens in most training batches
# WanAttnProcessor (diffusers 0.42) takes the last 512 context tokens as text when image tokens are present:
# any other max_sequence_length feeds image tokens to the text projections (and none to the image ones).
I2V_TEXT_LEN = 512
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in T5
GENERATION_DEFAULTS: dict[str, Any] = {
    "height": FRAME_SIZE,
    "width": FRAME_SIZE,
    "num_frames": NUM_FRAMES,
    "num_inference_steps": 20,
    "guidance_scale": 5.0,
}
_TASKS = ("t2v", "i2v")


@dataclass(frozen=True)
class TinySizes:
    """Sizes of every component; the defaults are the shipped models."""

    # VAE: 9×64×64 RGB -> z_dim×3×8×8
    vae_base_dim: int = 16
    vae_dim_mult: tuple[int, ...] = (1, 2, 2, 2)
    vae_num_res_blocks: int = 1
    z_dim: int = 16
    # transformer: hidden = heads × head_dim
    heads: int = 4
    head_dim: int = 64
    layers: int = 6
    ffn_dim: int = 1024
    freq_dim: int = 256
    # frozen random text encoder (UMT5)
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 128
    text_vocab: int = 64
    # frozen random image encoder (CLIP ViT), I2V only
    clip_dim: int = 64
    clip_layers: int = 3
    clip_heads: int = 4
    clip_ff: int = 128
    clip_image_size: int = 64
    clip_patch: int = 16
    # sampler
    flow_shift: float = 3.0

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim


# For fast tests: same structure, a fraction of the width and depth.
TEST_SIZES = TinySizes(vae_base_dim=8, z_dim=4, heads=2, head_dim=16, layers=2, ffn_dim=64, freq_dim=32,
                       text_dim=16, text_layers=1, text_heads=2, text_ff=32, clip_dim=16, clip_layers=2,
                       clip_heads=2, clip_ff=32)


def generation_kwargs(task: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for generating with a tiny pipeline of ``task`` (64×64, 9 frames, 20 steps, cfg 5)."""
    length = {"t2v": TEXT_LEN, "i2v": I2V_TEXT_LEN}[task]
    return {**GENERATION_DEFAULTS, "max_sequence_length": length, **overrides}


def _sizes(base: TinySizes, overrides: dict[str, Any]) -> TinySizes:
    unknown = set(overrides) - {f.name for f in fields(TinySizes)}
    if unknown:
        raise TypeError(f"unknown size(s) {sorted(unknown)}; known: {[f.name for f in fields(TinySizes)]}")
    return replace(base, **overrides)


def build_tokenizer(
    words: tuple[str, ...] = VOCABULARY, max_length: int = TEXT_LEN
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lower-cased whitespace words, unknown words -> ``<unk>``, ``</s>`` appended."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval().requires_grad_(False)
    return module


def _text_encoder(s: TinySizes, vocab_size: int) -> UMT5EncoderModel:
    if vocab_size > s.text_vocab:
        raise ValueError(f"tokenizer has {vocab_size} tokens but text_vocab is {s.text_vocab}")
    cfg = UMT5Config(vocab_size=s.text_vocab, d_model=s.text_dim, d_kv=s.text_dim // s.text_heads,
                     d_ff=s.text_ff, num_layers=s.text_layers, num_heads=s.text_heads,
                     relative_attention_num_buckets=8,
                     relative_attention_max_distance=32, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                     pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
    return _frozen(UMT5EncoderModel(cfg))


def _vae(s: TinySizes) -> AutoencoderKLWan:
    # latents_mean/std are placeholders (0/1) until training measures them.
    return AutoencoderKLWan(base_dim=s.vae_base_dim, z_dim=s.z_dim, dim_mult=list(s.vae_dim_mult),
                            num_res_blocks=s.vae_num_res_blocks, attn_scales=[],
                            temperal_downsample=[False, True, True], dropout=0.0,
                            latents_mean=[0.0] * s.z_dim, latents_std=[1.0] * s.z_dim)


def _transformer(s: TinySizes, task: str) -> WanTransformer3DModel:
    i2v = task == "i2v"
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=s.heads, attention_head_dim=s.head_dim,
        in_channels=2 * s.z_dim + 4 if i2v else s.z_dim,  # I2V: noisy latent + (4 mask + z_dim) condition
        out_channels=s.z_dim, text_dim=s.text_dim, freq_dim=s.freq_dim, ffn_dim=s.ffn_dim,
        num_layers=s.layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        image_dim=s.clip_dim if i2v else None,
        added_kv_proj_dim=s.hidden if i2v else None,  # image tokens are projected to the hidden size first
        rope_max_seq_len=1024,
    )


def _image_encoder(s: TinySizes) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    cfg = CLIPVisionConfig(hidden_size=s.clip_dim, intermediate_size=s.clip_ff,
                           num_hidden_layers=s.clip_layers, num_attention_heads=s.clip_heads,
                           image_size=s.clip_image_size, patch_size=s.clip_patch, projection_dim=s.clip_dim)
    side = s.clip_image_size
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                   do_resize=True, do_center_crop=True, do_normalize=True,
                                   do_convert_rgb=True)
    return _frozen(CLIPVisionModel(cfg)), processor


def _scheduler(s: TinySizes) -> UniPCMultistepScheduler:
    # Flow matching as Wan2.1: the model predicts velocity (noise - x0) on the shifted flow sigma schedule.
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=s.flow_shift)


def build_tiny_components(task: str, seed: int = 0, **sizes: Any) -> dict[str, Any]:
    """Build the pipeline components at a seeded random init (keyword overrides of :class:`TinySizes`).

    Returns the keyword arguments of ``WanPipeline`` / ``WanImageToVideoPipeline``. The text and image
    encoders are frozen (``requires_grad=False``, eval mode); VAE and transformer are trainable.
    Every component is seeded separately so changing one size does not reshuffle the others.
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    s = _sizes(TinySizes(), sizes)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = _text_encoder(s, len(tokenizer))
    torch.manual_seed(seed + 1)
    vae = _vae(s)
    torch.manual_seed(seed + 2 + _TASKS.index(task))
    transformer = _transformer(s, task)
    parts: dict[str, Any] = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae,
                             "scheduler": _scheduler(s), "transformer": transformer}
    if task == "i2v":
        torch.manual_seed(seed + 4)
        parts["image_encoder"], parts["image_processor"] = _image_encoder(s)
    return parts


def build_tiny_pipeline(task: str, seed: int = 0, **sizes: Any) -> WanPipeline | WanImageToVideoPipeline:
    """An untrained tiny pipeline: ``"t2v"`` -> ``WanPipeline``, ``"i2v"`` -> ``WanImageToVideoPipeline``."""
    parts = build_tiny_components(task, seed, **sizes)
    cls = WanPipeline if task == "t2v" else WanImageToVideoPipeline
    return cls(**parts)


def save_tiny_pipeline(
    pipe: WanPipeline | WanImageToVideoPipeline,
    directory: str | os.PathLike,
    transformer_dtype: torch.dtype | None = None,
) -> Path:
    """``save_pretrained`` into ``directory`` (safetensors), optionally with the transformer in another dtype.

    The in-memory pipeline is left untouched (the transformer is cast on a copy). The directory loads offline
    with ``WanPipeline.from_pretrained`` / ``WanImageToVideoPipeline.from_pretrained``.
    """
    directory = Path(directory)
    pipe.save_pretrained(directory, safe_serialization=True)
    if transformer_dtype is not None and pipe.transformer.dtype != transformer_dtype:
        cast = copy.deepcopy(pipe.transformer).to(transformer_dtype)
        cast.save_pretrained(directory / "transformer", safe_serialization=True)
    return directory


def make_random_tiny_pipeline_dir(
    task: str,
    directory: str | os.PathLike,
    seed: int = 0,
    sizes: TinySizes = TEST_SIZES,
) -> Path:
    """Save an untrained tiny pipeline (:data:`TEST_SIZES` by default) for fast tests; returns the dir."""
    return save_tiny_pipeline(build_tiny_pipeline(task, seed, **asdict(sizes)), directory)


WAN22_KINDS = ("t2v_moe", "i2v_moe", "ti2v")
WAN22_Z_DIM = 48  # Wan2.2's VAE (TI2V-5B): 48 latent channels


def wan22_vae_model(s: TinySizes = TEST_SIZES) -> AutoencoderKLWan:
    """A random Wan2.2-architecture VAE at ``s``'s widths: z_dim 48, residual blocks, 2×2 pixel patches, 16×
    spatial / 4× temporal compression (the layout of Wan2.2-TI2V-5B-Diffusers' ``vae/config.json``)."""
    return AutoencoderKLWan(base_dim=s.vae_base_dim, decoder_base_dim=s.vae_base_dim, z_dim=WAN22_Z_DIM,
                            dim_mult=list(s.vae_dim_mult), num_res_blocks=s.vae_num_res_blocks, attn_scales=[],
                            temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
                            in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                            latents_mean=[0.0] * WAN22_Z_DIM, latents_std=[1.0] * WAN22_Z_DIM)


def make_random_tiny_wan22_dir(
    kind: str,
    directory: str | os.PathLike,
    seed: int = 0,
    sizes: TinySizes = TEST_SIZES,
    wan22_vae: bool = False,
) -> Path:
    """An untrained tiny Wan2.2 pipeline directory with the layout of the real ones, for fast tests.

    ``t2v_moe``: Wan2.2-T2V-A14B (``WanPipeline``, ``transformer`` + ``transformer_2``, boundary_ratio 0.875);
    ``i2v_moe``: Wan2.2-I2V-A14B (``WanImageToVideoPipeline``, two experts taking the noisy latent plus the
    4 mask + z_dim condition channels, no CLIP image encoder, boundary_ratio 0.9); ``ti2v``: Wan2.2-TI2V-5B
    (``WanPipeline`` with ``expand_timesteps``). ``wan22_vae``: the VAE is a test-size Wan2.2 VAE
    (:func:`wan22_vae_model`: z_dim 48, 16× spatial, as TI2V-5B's) and the transformers' channels follow it.
    """
    if kind not in WAN22_KINDS:
        raise ValueError(f"kind must be one of {WAN22_KINDS}, got {kind!r}")
    parts = build_tiny_components("t2v", seed, **asdict(sizes))
    if wan22_vae:
        torch.manual_seed(seed + 1)
        parts["vae"] = wan22_vae_model(sizes)
    z_dim = parts["vae"].config.z_dim
    in_channels = 2 * z_dim + 4 if kind == "i2v_moe" else z_dim
    config = {**parts["transformer"].config, "in_channels": in_channels, "out_channels": z_dim}
    experts = {}
    for i, name in enumerate(("transformer", "transformer_2") if kind != "ti2v" else ("transformer",)):
        torch.manual_seed(seed + 10 + i)
        experts[name] = WanTransformer3DModel.from_config(config)
    common = {k: parts[k] for k in ("tokenizer", "text_encoder", "vae", "scheduler")}
    if kind == "t2v_moe":
        pipe = WanPipeline(**common, **experts, boundary_ratio=0.875)
    elif kind == "i2v_moe":
        pipe = WanImageToVideoPipeline(**common, **experts, image_encoder=None, image_processor=None,
                                       boundary_ratio=0.9)
    else:
        pipe = WanPipeline(**common, **experts, expand_timesteps=True)
    directory = Path(directory)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
