"""Check a quantized Wan2.1 DiT checkpoint before handing it to lightx2v (or our runtime).

Works on an LLMC ``save_lightx2v`` export (diffusers keys, ``config.json`` next to the weights) and
on a converted checkpoint (Wan keys; chunked, by-block or single file). It reads one tensor at a
time, so a 14B checkpoint does not need to fit in memory, and reports every problem it finds rather
than stopping at the first.

Checks: the index json matches the files; every block (counted from the keys) has all its
quantized linears (10 T2V, 12 I2V) with int8/fp8 ``weight`` (out, in), a float ``weight_scale``
(out, 1) that is positive and finite, and a ``bias`` (out,); every block stores a layer kind (e.g.
``attn1.to_q``) in one format; with advanced PTQ each block has ``affine_norm1`` / ``affine_norm3`` weight
and bias of shape (dim,), the weights without zeros (a zero smoothing entry erases its channel); no tensor
holds NaN or Inf.

:func:`check_state_dict` runs the value checks on a state dict already in memory: the runtime loader calls it,
so inference refuses what ``verify`` rejects.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from vidquant.export import formats, keymap
from vidquant.export.io import TORCH_SUFFIXES, CheckpointError, find_index, read_index

__all__ = ["Problem", "check_state_dict", "main", "verify"]

QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a checkpoint: where (file, key) and what was expected."""

    file: str
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class _Info:
    file: str
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class _Scan:
    """What one pass over the files found."""

    root: Path
    tensors: dict[str, _Info] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    block_scheme: str | None = None  # the checkpoint's format beyond W8A8 (mxfp4, nvfp4, ...), if any

    def add(self, file: str, key: str | None, message: str) -> None:
        self.problems.append(Problem(file, key, message))


# ----------------------------------------------------------------------------------------------- files


def _files_to_scan(scan: _Scan) -> list[Path]:
    """The weight files of the checkpoint; index problems are recorded on the way."""
    root = scan.root
    if root.is_file():
        return [root]
    try:
        index_path = find_index(root)
    except CheckpointError as exc:
        scan.add(str(root), None, str(exc))
        return []
    if index_path is None:
        files = sorted(root.glob("*.safetensors")) or sorted(p for p in root.iterdir() if p.suffix in TORCH_SUFFIXES)
        if not files:
            scan.add(str(root), None, "no weight files (*.safetensors, *.pth, *.pt) and no index json")
        return files
    try:
        weight_map = read_index(index_path)["weight_map"]
    except CheckpointError as exc:
        scan.add(str(index_path), None, str(exc))
        return []
    named = sorted(set(weight_map.values()))
    for name in named:
        if not (root / name).is_file():
            n = sum(v == name for v in weight_map.values())
            scan.add(str(root / name), None, f"missing: {index_path.name} names it for {n} keys")
    for stray in sorted(set(p.name for p in root.glob("*.safetensors")) - set(named)):
        scan.add(str(root / stray), None, f"not in {index_path.name} (a glob-based loader would merge it)")
    return [root / name for name in named if (root / name).is_file()]


def _iter_tensors(path: Path):
    """(key, tensor) pairs, one tensor in memory at a time for safetensors."""
    if path.suffix in TORCH_SUFFIXES:
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # a legacy (non-zip) .pth cannot be memory-mapped: read it whole
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"refused: not a plain tensor state dict ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise ValueError(f"expected a state dict, got {type(state).__name__}")
        yield from state.items()
        return
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            yield key, f.get_tensor(key)


def _value_problems(key: str, t: torch.Tensor) -> list[str]:
    """What is wrong with one tensor's values: NaN/Inf anywhere, scales <= 0, zeros in a smoothing vector."""
    if not t.is_floating_point():
        return []
    values = t.float()
    finite = torch.isfinite(values)
    problems = []
    if not bool(finite.all()):
        problems.append(f"{int((~finite).sum())} NaN/Inf values; expected all finite")
    # one-byte block scales (MX E8M0, NVFP4 e4m3) are 0 for all-zero blocks and in the swizzle padding
    if key.endswith("_scale") and t.element_size() > 1:
        nonpositive = int((values[finite] <= 0).sum())
        if nonpositive:
            problems.append(f"{nonpositive} scales <= 0; expected positive per-channel scales")
    if ".affine_norm" in key and key.endswith(".weight"):
        zeros = int((values == 0).sum())
        if zeros:
            problems.append(f"{zeros} zero entries; a smoothing vector must be non-zero (it divides the input)")
    return problems


def _check_values(scan: _Scan, file: str, key: str, t: torch.Tensor) -> None:
    for message in _value_problems(key, t):
        scan.add(file, key, message)


def _scan_file(scan: _Scan, path: Path) -> None:
    file = str(path)
    try:
        for key, t in _iter_tensors(path):
            if key in scan.tensors:
                scan.add(file, key, f"duplicate key, also in {scan.tensors[key].file}")
                continue
            if not isinstance(t, torch.Tensor):
                scan.add(file, key, f"is a {type(t).__name__}; expected a tensor")
                continue
            scan.tensors[key] = _Info(file, t.dtype, tuple(t.shape))
            _check_values(scan, file, key, t)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        scan.add(file, None, f"corrupt or truncated weight file: {exc}")


def _check_index_keys(scan: _Scan) -> None:
    """Every key the index lists is in the file it names, and every key in those files is listed."""
    root = scan.root
    index_path = find_index(root) if root.is_dir() else None
    if index_path is None:
        return
    index = read_index(index_path)
    weight_map = index["weight_map"]
    for key, name in weight_map.items():
        info = scan.tensors.get(key)
        if (root / name).is_file() and (info is None or Path(info.file).name != name):
            scan.add(str(root / name), key, f"listed in {index_path.name} but not in this file")
    for key, info in scan.tensors.items():
        if key not in weight_map:
            scan.add(info.file, key, f"in this file but not listed in {index_path.name}")
    _check_total_size(scan, index_path, index, weight_map)


def _check_total_size(scan: _Scan, index_path: Path, index: dict, weight_map: dict) -> None:
    """total_size is the sum of tensor bytes (diffusers) or of file sizes (lightx2v's converter)."""
    total = index.get("metadata", {}).get("total_size")
    if total is None:
        return
    root = scan.root
    files = {root / n for n in set(weight_map.values()) if (root / n).is_file()}
    file_bytes = sum(f.stat().st_size for f in files)
    tensor_bytes = sum(torch.Size(i.shape).numel() * i.dtype.itemsize for i in scan.tensors.values())
    if total not in (file_bytes, tensor_bytes):
        scan.add(str(index_path), "metadata.total_size",
                 f"is {total}; expected {tensor_bytes} (tensor bytes) or {file_bytes} (file bytes)")


# ----------------------------------------------------------------------------------------------- model


def _block_file(scan: _Scan, block: int) -> str:
    """The file holding (most of) a block, to name in problems about keys that are absent."""
    prefix = f"blocks.{block}."
    for key, info in scan.tensors.items():
        if key.startswith(prefix):
            return info.file
    return str(scan.root)


def _check_linear(scan: _Scan, file: str, name: str) -> int | None:
    """Check one quantized linear; return its in_features when the weight is usable."""
    w = scan.tensors.get(name + ".weight")
    s = scan.tensors.get(name + ".weight_scale")
    b = scan.tensors.get(name + ".bias")
    if scan.block_scheme is not None:
        return _check_block_linear(scan, file, name, scan.block_scheme)
    if w is None:
        scan.add(file, name + ".weight", "missing; expected int8 or float8_e4m3fn weight of shape (out, in)")
        return None
    if w.dtype not in QUANT_DTYPES:
        scan.add(w.file, name + ".weight", f"dtype {w.dtype}; expected torch.int8 or torch.float8_e4m3fn")
    if len(w.shape) != 2:
        scan.add(w.file, name + ".weight", f"shape {w.shape}; expected 2-D (out, in)")
        return None
    out = w.shape[0]
    if s is None:
        scan.add(file, name + ".weight_scale", f"missing; expected float tensor of shape ({out}, 1)")
    elif s.shape != (out, 1) or not s.dtype.is_floating_point:
        found = f"{s.dtype} {s.shape}"
        scan.add(s.file, name + ".weight_scale", f"{found}; expected a float tensor of shape ({out}, 1)")
    if b is None:
        scan.add(file, name + ".bias", f"missing; expected shape ({out},)")
    elif b.shape != (out,):
        scan.add(b.file, name + ".bias", f"shape {b.shape}; expected ({out},)")
    return w.shape[1]


def _block_scheme(scan: _Scan, name: str) -> str | None:
    """The block format (mxfp8, mxfp6-mxfp8, mxfp4, nvfp4, int4-g128-marlin, fp8-pertensor) of a linear, if any."""
    tensors = {suffix: scan.tensors.get(f"{name}.{suffix}") for suffix in ("weight", *formats.companion_suffixes())}
    return formats.detect_linear_scheme({k: (i.dtype, i.shape) for k, i in tensors.items() if i is not None})


def _check_block_linear(scan: _Scan, file: str, name: str, scheme: str) -> int | None:
    """Every tensor lightx2v's ``scheme`` loads for this linear, with its dtype and shape; returns in_features."""
    w = scan.tensors.get(name + ".weight")
    if w is None:
        scan.add(file, name + ".weight", f"missing; expected the packed {scheme} weight")
        return None
    out_f, in_f = formats.out_features_of(scheme, w.shape), formats.in_features_of(scheme, w.shape)
    for suffix, (dtype, shape) in formats.expected_layout(scheme, out_f, in_f).items():
        info = scan.tensors.get(f"{name}.{suffix}")
        if info is None:
            scan.add(file, f"{name}.{suffix}", f"missing; {scheme} needs {dtype} of shape {shape}")
        elif info.dtype != dtype or info.shape != shape:
            scan.add(info.file, f"{name}.{suffix}", f"{info.dtype} {info.shape}; {scheme} needs {dtype} {shape}")
    b = scan.tensors.get(name + ".bias")
    if b is None:
        scan.add(file, name + ".bias", f"missing; expected shape ({out_f},)")
    elif b.shape != (out_f,):
        scan.add(b.file, name + ".bias", f"shape {b.shape}; expected ({out_f},)")
    return in_f


def _check_affine(scan: _Scan, file: str, block: int, dim: int | None) -> None:
    for norm in ("affine_norm1", "affine_norm3"):
        for param in ("weight", "bias"):
            key = f"blocks.{block}.{norm}.{param}"
            info = scan.tensors.get(key)
            expected = f"({dim},)" if dim else "(dim,)"
            if info is None:
                scan.add(file, key, f"missing; advanced_ptq needs the smoothing vector, shape {expected}")
            elif not info.dtype.is_floating_point or len(info.shape) != 1 or (dim and info.shape != (dim,)):
                found = f"{info.dtype} {info.shape}"
                scan.add(info.file, key, f"{found}; expected a float tensor of shape {expected}")


def _advanced_ptq(scan: _Scan, flag: bool | None) -> bool:
    """The flag if given, else whether ``config.json`` in the checkpoint dir says advanced_ptq."""
    if flag is not None:
        return flag
    config = scan.root / "config.json"
    if not (scan.root.is_dir() and config.is_file()):
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        scan.add(str(config), None, f"cannot read config.json: {exc}")
        return False
    return isinstance(data, dict) and data.get("quant_method") == "advanced_ptq"


def _check_model(scan: _Scan, advanced_ptq: bool) -> dict:
    """Per-block checks; returns a summary (layout, blocks, i2v)."""
    keys = list(scan.tensors)
    layout = keymap.detect_layout(keys)
    root = str(scan.root)
    if layout not in ("wan", "diffusers"):
        scan.add(root, None, f"key layout is {layout}; expected Wan or diffusers names")
        return {"layout": layout}
    blocks = sorted({i for i in map(keymap.block_index, keys) if i is not None})
    if not blocks:
        scan.add(root, None, "no transformer blocks (blocks.N.*) found")
        return {"layout": layout, "blocks": 0}
    for missing in sorted(set(range(blocks[-1] + 1)) - set(blocks)):
        scan.add(root, f"blocks.{missing}", f"block missing; blocks 0..{blocks[-1]} expected")
    i2v = keymap.is_i2v(keys)
    linears = keymap.block_linears(layout, i2v)
    found = Counter(_block_scheme(scan, f"blocks.{b}.{lin}") for b in blocks for lin in linears)
    scan.block_scheme = max((s for s in found if s), key=found.__getitem__, default=None)
    for block in blocks:
        file = _block_file(scan, block)
        linears = keymap.block_linears(layout, i2v)
        dims = [_check_linear(scan, file, f"blocks.{block}.{lin}") for lin in linears]
        if advanced_ptq:
            _check_affine(scan, file, block, dims[0])
    _check_one_format_per_kind(scan, blocks, keymap.block_linears(layout, i2v))
    return {"layout": layout, "blocks": len(blocks), "i2v": i2v, "advanced_ptq": advanced_ptq}


def _check_one_format_per_kind(scan: _Scan, blocks: list[int], linears: Sequence[str]) -> None:
    """Each layer kind (e.g. ``attn1.to_q``) is stored in one format in every block: a kernel is picked per
    kind, so a block in another format would be run with the wrong one."""
    for lin in linears:
        found = {b: scan.tensors[f"blocks.{b}.{lin}.weight"] for b in blocks
                 if f"blocks.{b}.{lin}.weight" in scan.tensors}
        dtypes = sorted({str(i.dtype) for i in found.values()})
        if len(dtypes) > 1:
            first = next(iter(found.values())).dtype
            odd = [b for b, i in found.items() if i.dtype != first]
            scan.add(found[odd[0]].file, f"blocks.{odd[0]}.{lin}.weight",
                     f"{found[odd[0]].dtype}, but other blocks store {lin} as {first}; expected one format per "
                     f"layer kind (found {', '.join(dtypes)})")


# ----------------------------------------------------------------------------------------------- API


def check_state_dict(state: dict[str, torch.Tensor], where: str | os.PathLike, *,
                     files: dict[str, str] | None = None, advanced_ptq: bool = False,
                     stored_name: Callable[[str], str] = str, shown: int = 3) -> None:
    """Raise CheckpointError (one line) if a loaded quantized state dict holds values ``verify`` rejects.

    Checks every tensor's values (finite; ``*_scale`` positive; with ``advanced_ptq`` the ``affine_norm1/3``
    weights non-zero) and one format per layer kind. Missing or unexpected tensors are the loader's to report
    (it knows the base model). ``files`` maps keys to the file they came from and ``stored_name`` to the name
    on disk (the runtime renames Wan keys), for the message.
    """
    files = files or {}
    problems = [Problem(files.get(k, str(where)), stored_name(k), m) for k, t in state.items()
                for m in _value_problems(k, t) if advanced_ptq or ".affine_norm" not in k]
    scan = _Scan(Path(where), {k: _Info(files.get(k, str(where)), t.dtype, tuple(t.shape)) for k, t in state.items()})
    blocks = sorted({i for i in map(keymap.block_index, state) if i is not None})
    layout = keymap.detect_layout(state)
    if layout in ("wan", "diffusers"):
        _check_one_format_per_kind(scan, blocks, keymap.block_linears(layout, keymap.is_i2v(state)))
    problems += scan.problems
    if problems:
        more = f"; ... and {len(problems) - shown} more" if len(problems) > shown else ""
        raise CheckpointError(f"{where}: {len(problems)} problem(s) that `vidquant verify` reports, refusing to "
                              f"run it: " + "; ".join(str(p) for p in problems[:shown]) + more)




def inspect_checkpoint(
    path: str | os.PathLike, *, advanced_ptq: bool | None = None
) -> tuple[list[Problem], dict]:
    """:func:`verify` plus a summary dict (layout, blocks, i2v, advanced_ptq, tensors)."""
    scan = _Scan(Path(path))
    if not scan.root.exists():
        return [Problem(str(scan.root), None, "no such file or directory")], {}
    for f in _files_to_scan(scan):
        _scan_file(scan, f)
    try:
        _check_index_keys(scan)
    except CheckpointError as exc:
        scan.add(str(scan.root), None, str(exc))
    summary = {"tensors": len(scan.tensors)}
    if scan.tensors:
        summary |= _check_model(scan, _advanced_ptq(scan, advanced_ptq))
    return scan.problems, summary


def verify(path: str | os.PathLike, *, advanced_ptq: bool | None = None) -> list[Problem]:
    """Every problem found in the checkpoint at ``path`` (empty list: clean).

    Args:
        path: a checkpoint directory (with or without an index json) or a single weight file.
        advanced_ptq: require ``affine_norm1/3``; None reads ``quant_method`` from ``config.json``.
    """
    return inspect_checkpoint(path, advanced_ptq=advanced_ptq)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print every problem; exit 0 if clean, 1 otherwise."""
    p = argparse.ArgumentParser(prog="vidquant-verify", description=__doc__.splitlines()[0])
    p.add_argument("path", help="checkpoint directory or weight file")
    p.add_argument("--advanced-ptq", action=argparse.BooleanOptionalAction, default=None,
                   help="require affine_norm1/3 smoothing vectors (default: from config.json quant_method)")
    args = p.parse_args(argv)
    problems, summary = inspect_checkpoint(args.path, advanced_ptq=args.advanced_ptq)
    for problem in problems:
        print(problem)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    kind = "I2V" if summary.get("i2v") else "T2V"
    print(f"OK: {args.path}: {summary['layout']} layout, {summary['blocks']} blocks, {kind}, "
          f"{summary['tensors']} tensors, advanced_ptq={summary['advanced_ptq']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

