"""Load Wan pipelines from a local diffusers-format directory, offline, with clear errors.

The directory has the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers / Wan2.1-I2V-14B-480P-Diffusers:
`model_index.json` plus one folder per component. Dtype policy (as LLMC): the transformer(s) and text
encoder in the working dtype (bf16 by default, with diffusers' keep-in-fp32 modules: norms, modulation
tables, time embedder), the VAE and the CLIP image encoder always in fp32.

Wan2.2 (diffusers 0.42 `pipeline_wan.py` / `pipeline_wan_i2v.py`): the A14B models add `transformer_2` and
`boundary_ratio` to `model_index.json` (`transformer` = high-noise expert, timesteps >= boundary_ratio * 1000;
`transformer_2` = low-noise expert, below) and have no CLIP image encoder (`image_encoder: [null, null]`);
TI2V-5B is one transformer with `expand_timesteps: true` (per-token timesteps). Which components a
directory needs is read from its own `model_index.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ModelLoadError", "CheckpointInfo", "inspect_checkpoint", "load_pipeline", "resolve_dtype",
           "resolve_device"]

_PIPELINE_TASK = {"WanPipeline": "t2v", "WanImageToVideoPipeline": "i2v"}
_REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_OPTIONAL = ("transformer_2", "image_encoder", "image_processor")  # required when model_index.json names them
EXPERTS = ("transformer", "transformer_2")  # pipeline attributes: high-noise, low-noise expert (Wan2.2 A14B)
# config `model.type` -> (task, family); the Wan2.2 names are ours (LLMC's are not in its reference commit)
MODEL_TYPES = {
    "WanT2V": ("t2v", "wan2.1"), "WanI2V": ("i2v", "wan2.1"),
    "Wan22T2V": ("t2v", "wan2.2_moe"), "Wan22I2V": ("i2v", "wan2.2_moe"), "Wan22TI2V": ("t2v", "wan2.2"),
}


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names the path and what is missing."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    task: str  # "t2v" | "i2v"
    pipeline_class: str
    experts: tuple[str, ...] = ("transformer",)  # ("transformer", "transformer_2") for a Wan2.2 A14B mixture
    boundary_ratio: float | None = None
    expand_timesteps: bool = False  # Wan2.2 TI2V-5B
    components: tuple[str, ...] = _REQUIRED

    @property
    def family(self) -> str:
        """lightx2v's model class: 'wan2.1', 'wan2.2_moe' (two experts) or 'wan2.2' (TI2V-5B, dense)."""
        if len(self.experts) > 1:
            return "wan2.2_moe"
        return "wan2.2" if self.expand_timesteps else "wan2.1"

    @property
    def model_type(self) -> str:
        return next(name for name, kind in MODEL_TYPES.items() if kind == (self.task, self.family))


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Check that `path` is a complete diffusers Wan pipeline directory and say what it is."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found (model.path must be a local diffusers-format "
                             "Wan2.1 / Wan2.2 directory; nothing is downloaded)")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{index}: missing; {path} is not a diffusers pipeline directory")
    try:
        meta = json.loads(index.read_text())
    except ValueError as err:  # bad JSON or not UTF-8
        raise ModelLoadError(f"{index}: not valid JSON ({err})") from None
    cls = meta.get("_class_name") if isinstance(meta, dict) else None
    if cls not in _PIPELINE_TASK:
        raise ModelLoadError(f"{index}: _class_name is {cls!r}; expected one of {sorted(_PIPELINE_TASK)}")
    named = tuple(c for c in _OPTIONAL if isinstance(meta.get(c), list) and meta[c][0] is not None)
    components = _REQUIRED + named
    for comp in components:
        if not (path / comp).is_dir():
            raise ModelLoadError(f"{path / comp}: component folder missing ({index} names "
                                 f"{', '.join(components)})")
    experts = tuple(e for e in EXPERTS if e in components)
    boundary = meta.get("boundary_ratio")
    if len(experts) > 1 and not (isinstance(boundary, int | float) and 0 < boundary < 1):
        raise ModelLoadError(f"{index}: boundary_ratio is {boundary!r}; a two-expert (transformer_2) Wan2.2 "
                             "pipeline needs a number in (0, 1)")
    for expert in experts:
        _check_weights(path / expert)
    return CheckpointInfo(path=path, task=_PIPELINE_TASK[cls], pipeline_class=cls, experts=experts,
                          boundary_ratio=float(boundary) if len(experts) > 1 else None,
                          expand_timesteps=bool(meta.get("expand_timesteps", False)), components=components)


def _check_weights(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder / 'config.json'}: missing")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelLoadError(f"{folder}: no weight files (*.safetensors)")


def check_task(info: CheckpointInfo, model_type: str | None) -> None:
    """Refuse a config whose model.type does not describe the checkpoint (T2V / I2V, Wan2.1 / Wan2.2)."""
    if model_type is not None and model_type != info.model_type:
        what = {"wan2.1": "", "wan2.2_moe": f" two-expert Wan2.2 (boundary_ratio {info.boundary_ratio})",
                "wan2.2": " Wan2.2 TI2V (expand_timesteps)"}[info.family]
        raise ModelLoadError(
            f"model.type is {model_type} but {info.path} is a{what} {info.task.upper()} checkpoint "
            f"({info.pipeline_class}); set model.type: {info.model_type}"
        )


def _pipeline_task(info: CheckpointInfo, task: str | None) -> str:
    """The checkpoint's own task, or the other one for TI2V-5B (one model for text- and image-to-video)."""
    if task is None or task == info.task:
        return info.task
    if not info.expand_timesteps or task not in ("t2v", "i2v"):
        raise ModelLoadError(f"{info.path}: a {info.task.upper()} checkpoint ({info.pipeline_class}) cannot run "
                             f"as {task!r}; only Wan2.2 TI2V (expand_timesteps) runs both t2v and i2v")
    return task


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(torch_dtype: str | torch.dtype = "auto") -> torch.dtype:
    """LLMC's `model.torch_dtype`: 'auto' means bf16 (what LLMC always uses for Wan)."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    name = torch_dtype.removeprefix("torch.")
    return {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_pipeline(
    path: str | os.PathLike,
    model_type: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
    components: dict | None = None,
    task: str | None = None,
):
    """Load a `WanPipeline` or `WanImageToVideoPipeline` from a local directory (never the network).

    `model_type` (`MODEL_TYPES`, as in the config) is checked against the checkpoint. `components`
    (e.g. ``{"transformer": quantized}``, or both experts of a Wan2.2 mixture) are used as given instead of
    being loaded from the directory. `task` "i2v" loads a TI2V-5B directory (a `WanPipeline` with
    `expand_timesteps`) as the `WanImageToVideoPipeline` of its image-conditioned mode, as diffusers does.
    """
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

    info = inspect_checkpoint(path)
    check_task(info, model_type)
    dtype = resolve_dtype(dtype)
    cls = WanPipeline if _pipeline_task(info, task) == "t2v" else WanImageToVideoPipeline
    extra = dict(components or {})
    try:
        if "vae" not in extra:
            extra["vae"] = AutoencoderKLWan.from_pretrained(info.path, subfolder="vae", dtype=torch.float32,
                                                            local_files_only=True)
        if "image_encoder" in info.components and "image_encoder" not in extra:
            from transformers import CLIPVisionModel

            extra["image_encoder"] = CLIPVisionModel.from_pretrained(
                info.path / "image_encoder", dtype=torch.float32, local_files_only=True)
        pipe = cls.from_pretrained(info.path, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{info.path}: could not load the {info.pipeline_class}: {err}") from err
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
