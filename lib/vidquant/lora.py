"""LLMC's ``model.lora_path``: a LoRA merged into the transformer's weights before anything else runs.

LLMC (``WanI2V.load_lora_weights``, llmc_reference §2.5) reads a folder with
``diffusion_pytorch_model.safetensors.index.json``, pairs each weight with its ``lora_A`` / ``lora_B`` and
sets ``W <- W + B @ A`` right after building the model, so the float reference videos, calibration and the
export all see the merged weights. vidquant does the same, with the converter's merge
(:func:`vidquant.export.converter.merge_lora`), and differs on purpose in three ways:

* T2V models merge the LoRA too (LLMC silently ignores ``lora_path`` for WanT2V).
* ``model.lora_alpha`` multiplies the update (LLMC's ``load_lora_weights(alpha=1.0)`` argument, which its
  configs cannot set; default 1.0 as LLMC); a stored ``<module>.alpha`` scales by alpha/rank (LLMC would
  refuse such a file).
* A single ``.safetensors`` file or a folder without an index is accepted; every LoRA key must match a weight,
  and a merge that gives NaN/Inf is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

__all__ = ["LoraError", "check_lora", "merge_lora_into"]


class LoraError(ValueError):
    """A LoRA that cannot be merged; the message names the file and the key."""


def check_lora(path: str | os.PathLike) -> list[str]:
    """Up-front check, before any model loads: the files exist and every key is LoRA-shaped (headers only).
    Returns the keys."""
    from vidquant.export.converter import _parse_lora_key
    from vidquant.export.io import TORCH_SUFFIXES, CheckpointError, safetensors_keys, source_files

    path = Path(path)
    if not path.exists():
        raise LoraError(f"model.lora_path: {path} does not exist")
    try:
        files = source_files(path)
        keys = [k for f in files if f.suffix not in TORCH_SUFFIXES for k in safetensors_keys(f)]
    except CheckpointError as err:
        raise LoraError(f"model.lora_path: {err}") from None
    bad = [k for k in keys if _parse_lora_key(k) is None]
    if bad:
        raise LoraError(f"model.lora_path: {path}: {bad[0]!r} is not a LoRA key (expected <module>.lora_A.weight / "
                        f".lora_B.weight, lora_down / lora_up, .alpha or .diff)")
    return keys


def merge_lora_into(transformer: nn.Module, path: str | os.PathLike, alpha: float = 1.0) -> int:
    """Merge the LoRA at ``path`` into ``transformer`` in place (``W += alpha * B @ A``); returns the number of
    weights changed. Raises LoraError naming the file and key when it does not fit or the result is not finite."""
    from vidquant.export.converter import ConverterError, merge_lora
    from vidquant.export.io import CheckpointError, load_state_dict

    try:
        lora = load_state_dict(path)
        state = dict(transformer.state_dict())
        before = {k: id(v) for k, v in state.items()}
        n = merge_lora(state, lora, alpha, source=str(path))
    except (ConverterError, CheckpointError) as err:
        raise LoraError(f"model.lora_path: {err}") from None
    changed = {k: v for k, v in state.items() if id(v) != before[k]}
    transformer.load_state_dict(changed, strict=False)
    return n
