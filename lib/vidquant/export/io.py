"""Safetensors checkpoint I/O shared by the whole project.

Three jobs, each with errors that name the offending file:

* :func:`load_state_dict` reads one file, a directory of ``*.safetensors`` files, or a sharded
  checkpoint described by a ``*.safetensors.index.json`` (then exactly the files the index names).
* :func:`save_sharded` writes diffusers-style shards plus the index json, byte-for-byte
  deterministic for the same input.
* :func:`atomic_dir` makes a whole output directory appear at once, or not at all.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vidquant.fsutil import atomic_dir, is_plain_name

__all__ = [
    "CheckpointError",
    "INDEX_SUFFIX",
    "QuantizedCheckpointError",
    "atomic_dir",
    "find_index",
    "load_state_dict",
    "read_index",
    "save_file_deterministic",
    "safetensors_keys",
    "save_sharded",
    "source_files",
    "write_index",
]

INDEX_SUFFIX = ".safetensors.index.json"
TORCH_SUFFIXES = (".pth", ".pt")


class CheckpointError(ValueError):
    """A checkpoint on disk is missing, unreadable or inconsistent. The message names the file."""


class QuantizedCheckpointError(CheckpointError):
    """A quantized checkpoint that cannot be loaded into the base model; names the keys and the file."""


# ----------------------------------------------------------------------------------------------- reading


def find_index(directory: str | os.PathLike) -> Path | None:
    """Return the directory's ``*.safetensors.index.json``, ``None`` if it has none.

    More than one index is an error: upstream lightx2v silently takes the first in ``os.listdir``
    order, which makes the loaded weights depend on the file system.
    """
    found = sorted(Path(directory).glob("*" + INDEX_SUFFIX))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(f"{directory}: more than one index json ({names}); keep exactly one")
    return found[0] if found else None


def read_index(index_path: str | os.PathLike) -> dict:
    """Parse and sanity-check an index json (``{"metadata": {...}, "weight_map": {key: file}}``)."""
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{index_path}: cannot read index json: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: expected a 'weight_map' object mapping keys to file names")
    for key, name in weight_map.items():
        if not is_plain_name(name):  # checked before anything is read: the index must not leave its folder
            raise CheckpointError(f"{index_path}: weight_map[{key!r}] is {name!r}; expected a file name in the "
                                  "index's own folder (no path separators, no '..')")
    return index


def source_files(path: str | os.PathLike) -> list[Path]:
    """The weight files that make up the checkpoint at ``path``, in a deterministic order.

    A file stands for itself. A directory with an index json yields exactly the files the index
    names (stray ``*.safetensors`` files next to it are ignored); without an index, every
    ``*.safetensors`` directly inside it (``.pth`` files in a directory are ignored, as upstream).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or directory")
    index_path = find_index(path)
    if index_path is not None:
        names = sorted(set(read_index(index_path)["weight_map"].values()))
        files = [path / name for name in names]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: shard named in {index_path.name} is missing")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files and no index json")
    return files


def _load_one(path: Path, device: str) -> dict[str, torch.Tensor]:
    """Load one weight file, turning library errors into a CheckpointError naming the file."""
    try:
        if path.suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(state, Mapping):
                raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"{path}: {key!r} is a {type(value).__name__}, not a tensor")
            return dict(state)
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: unsupported weight file type (want .safetensors, .pth or .pt)")
        return load_file(path, device=device)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # weights_only refused a pickle that would run code
        raise CheckpointError(f"{path}: refused: not a plain tensor state dict ({_first_line(exc)})") from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated weight file: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The first line of a library's message (torch's weights_only errors run to a page)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_state_dict(path_or_dir: str | os.PathLike, *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a whole checkpoint into one dict.

    Args:
        path_or_dir: a ``.safetensors``/``.pth``/``.pt`` file, a directory of ``*.safetensors``, or a
            directory with an index json (then exactly the files the index names are read, and every
            key the index lists must be in the file it names).
        device: where tensors are placed (``map_location`` for torch files).

    Raises:
        CheckpointError: a missing shard, a corrupt or truncated file, or a key found in two files.
    """
    path = Path(path_or_dir)
    files = source_files(path)
    merged: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for f in files:
        part = _load_one(f, device)
        for key, tensor in part.items():
            if key in merged:
                raise CheckpointError(f"duplicate key {key!r} in {f} (already loaded from {origin[key]})")
            merged[key] = tensor
            origin[key] = f
    index_path = find_index(path) if path.is_dir() else None
    if index_path is not None:
        for key, name in read_index(index_path)["weight_map"].items():
            if origin.get(key, Path()).name != name:
                raise CheckpointError(f"{path / name}: key {key!r} listed in {index_path.name} is not in it")
    return merged


def safetensors_keys(path: str | os.PathLike) -> list[str]:
    """Key names stored in a safetensors file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {exc}") from exc


# ----------------------------------------------------------------------------------------------- writing


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-disjoint copies where needed, in sorted key order.

    safetensors refuses non-contiguous tensors and tensors that share memory (tied weights in a
    ``.pth``), so those are copied; everything else is passed through without a copy.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{key!r}: expected a torch.Tensor, got {type(t).__name__}")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        elif t.numel():
            seen.add(ptr)
        out[key] = t
    return out


def save_file_deterministic(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write one safetensors file; the same tensors and metadata always give the same bytes."""
    path = Path(path)
    save_file(_plain_tensors(tensors), str(path), metadata=dict(metadata) if metadata else None)
    return path


def write_index(
    out_dir: str | os.PathLike, weight_map: Mapping[str, str], total_size: int, name: str
) -> Path:
    """Write ``{"metadata": {"total_size": n}, "weight_map": {...}}`` with sorted keys and indent 2."""
    index = {"metadata": {"total_size": int(total_size)}, "weight_map": dict(sorted(weight_map.items()))}
    index_path = Path(out_dir) / name
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index_path


def save_sharded(
    state_dict: Mapping[str, torch.Tensor],
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int,
    base_name: str = "diffusion_pytorch_model",
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write ``state_dict`` the way diffusers' ``save_pretrained`` does.

    One shard gives ``<base>.safetensors`` and no index; more give
    ``<base>-0000k-of-0000N.safetensors`` plus ``<base>.safetensors.index.json`` whose
    ``metadata.total_size`` is the sum of tensor bytes (diffusers' meaning). The split itself is
    huggingface_hub's, as used by diffusers. Returns the written files (index last).
    """
    if metadata is None:
        metadata = {"format": "pt"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = _plain_tensors(state_dict)
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern=base_name + "{suffix}.safetensors", max_shard_size=max_shard_bytes
    )
    written = []
    for filename, keys in sorted(split.filename_to_tensors.items()):
        written.append(save_file_deterministic({k: tensors[k] for k in keys}, out_dir / filename, metadata))
    if split.is_sharded:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        written.append(write_index(out_dir, split.tensor_to_filename, total, base_name + INDEX_SUFFIX))
    return written
