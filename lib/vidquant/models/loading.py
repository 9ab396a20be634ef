"""Load Wan pipelines from a local diffusers-format directory, offline, with clear errors.

The directory has the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers / Wan2.1-I2V-14B-480P-Diffusers:
`model_index.json` plus one folder per component. Dtype policy (as LLMC): the transformer and text
encoder in the working dtype (bf16 by default, with diffusers' keep-in-fp32 modules: norms, modulation
tables, time embedder), the VAE and the CLIP image encoder always in fp32.
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
_COMPONENTS = {
    "t2v": ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
    "i2v": ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder", "image_processor"),
}
_MODEL_TYPE = {"t2v": "WanT2V", "i2v": "WanI2V"}


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names the path and what is missing."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    task: str  # "t2v" | "i2v"
    pipeline_class: str

    @property
    def model_type(self) -> str:
        return _MODEL_TYPE[self.task]


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Check that `path` is a complete diffusers Wan pipeline directory and say which task it is for."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found (model.path must be a local diffusers-format "
                             "Wan2.1 directory; nothing is downloaded)")
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
    task = _PIPELINE_TASK[cls]
    for comp in _COMPONENTS[task]:
        if not (path / comp).is_dir():
            needs = ", ".join(_COMPONENTS[task])
            raise ModelLoadError(f"{path / comp}: component folder missing ({cls} needs {needs})")
    tdir = path / "transformer"
    if not (tdir / "config.json").is_file():
        raise ModelLoadError(f"{tdir / 'config.json'}: missing")
    if not any(tdir.glob("*.safetensors")) and not any(tdir.glob("*.bin")):
        raise ModelLoadError(f"{tdir}: no weight files (*.safetensors)")
    return CheckpointInfo(path=path, task=task, pipeline_class=cls)


def check_task(info: CheckpointInfo, model_type: str | None) -> None:
    """Refuse a T2V config on an I2V checkpoint and the reverse, naming both."""
    if model_type is not None and model_type != info.model_type:
        raise ModelLoadError(
            f"model.type is {model_type} but {info.path} is a {info.task.upper()} checkpoint "
            f"({info.pipeline_class}); set model.type: {info.model_type}"
        )


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
):
    """Load a `WanPipeline` or `WanImageToVideoPipeline` from a local directory (never the network).

    `model_type` ('WanT2V' / 'WanI2V', as in the config) is checked against the checkpoint. `components`
    (e.g. ``{"transformer": quantized}``) are used as given instead of being loaded from the directory.
    """
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

    info = inspect_checkpoint(path)
    check_task(info, model_type)
    dtype = resolve_dtype(dtype)
    extra = dict(components or {})
    try:
        if "vae" not in extra:
            extra["vae"] = AutoencoderKLWan.from_pretrained(info.path, subfolder="vae", dtype=torch.float32,
                                                            local_files_only=True)
        if info.task == "i2v" and "image_encoder" not in extra:
            from transformers import CLIPVisionModel

            extra["image_encoder"] = CLIPVisionModel.from_pretrained(
                info.path / "image_encoder", dtype=torch.float32, local_files_only=True)
        cls = WanPipeline if info.task == "t2v" else WanImageToVideoPipeline
        pipe = cls.from_pretrained(info.path, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{info.path}: could not load the {info.pipeline_class}: {err}") from err
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
