"""Compute once: the calibration capture and the float reference clips, cached by what determines them.

Both are pure functions of the pipeline's weights, the samples and the generation settings, and both are
the slow part of trying one more method or α on the same model. The key is a content fingerprint (module
classes, tensor names, shapes, dtypes and a strided sample of every tensor's values), not the model's path:
a pipeline whose transformer was smoothed or fake-quantized has another key, so quantized clips are never
served as float ones. Entries live in memory (the last `max_items`), and on disk under `directory` when one
is set (`VIDQUANT_CACHE_DIR`, or `default_cache().directory = ...`), so a new kernel reuses them too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidquant.calib.capture import CalibData, capture_block_inputs
from vidquant.calib.samples import Sample
from vidquant.generate import GenParams, generate_videos

__all__ = ["Cache", "default_cache", "model_fingerprint", "cached_capture", "cached_clips"]

log = logging.getLogger("vidquant")

_SAMPLE_VALUES = 256  # values per tensor in the fingerprint: enough to see any fold or quantization


def _tensor_digest(h, name: str, t: torch.Tensor) -> None:
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // _SAMPLE_VALUES)
    picked = flat[::step][:_SAMPLE_VALUES].float().cpu().numpy()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(picked.tobytes())
    h.update(np.float64(flat.float().sum().item() if flat.numel() <= 1 << 20 else 0.0).tobytes())


def model_fingerprint(model: Any) -> str:
    """A content key for a pipeline (every nn.Module component) or a module: classes, tensor names, shapes,
    dtypes and sampled values. Changes when any weight is smoothed, compensated or fake-quantized."""
    h = hashlib.sha256()
    parts = [("", model)] if isinstance(model, nn.Module) else sorted(
        (name, comp) for name, comp in getattr(model, "components", {}).items() if isinstance(comp, nn.Module))
    for part, module in parts:
        h.update(part.encode())
        h.update("|".join(f"{n}:{type(m).__name__}" for n, m in module.named_modules()).encode())
        for name, t in module.state_dict().items():
            _tensor_digest(h, f"{part}.{name}", t)
    return h.hexdigest()[:20]


def _sample_key(samples: Sequence[Sample]) -> list:
    out = []
    for s in samples:
        image = hashlib.sha256(Path(s.image).read_bytes()).hexdigest() if s.image is not None else None
        out.append([s.prompt, s.negative_prompt, image])
    return out


def _key(kind: str, **parts: Any) -> str:
    text = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Cache:
    """In memory (the last `max_items` entries), and on disk under `directory` when it is set."""

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 8):
        self.directory = Path(directory) if directory else None
        self.max_items = max_items
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str, compute: Callable[[], Any], keep: Callable[[Any], bool] | None = None) -> Any:
        """The value stored under `key`, else `compute()`, stored unless `keep` rejects it (a value the caller
        will refuse, e.g. non-finite clips, must not be served to the next caller)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        path = self.directory / f"{key}.pt" if self.directory else None
        if path is not None and path.is_file():
            value = torch.load(path, weights_only=False)
            self.hits += 1
            log.info("cache: loaded %s", path)
        else:
            value = compute()
            self.misses += 1
            if keep is not None and not keep(value):
                return value
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(value, tmp)
                tmp.replace(path)  # never a half-written entry
        self._items[key] = value
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._items.clear()


_DEFAULT: Cache | None = None


def default_cache() -> Cache:
    """The process-wide cache (on disk too when `VIDQUANT_CACHE_DIR` is set)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Cache(os.environ.get("VIDQUANT_CACHE_DIR") or None)
    return _DEFAULT


def cached_capture(pipe, samples: Sequence[Sample], params: GenParams, sample_steps: int,
                   selection: str = "uniform", progress: bool = True, cache: Cache | None = None) -> CalibData:
    """`capture_block_inputs`, computed once per (pipeline weights, samples, settings). The result is shared:
    the blockwise engine reads it and never changes it."""
    key = _key("capture", model=model_fingerprint(pipe), samples=_sample_key(samples),
               params=dataclasses.asdict(params), sample_steps=sample_steps, selection=selection)
    return (cache or default_cache()).get(
        key, lambda: capture_block_inputs(pipe, list(samples), params, sample_steps, selection, progress))


def cached_clips(pipe, samples: Sequence[Sample], params: GenParams, seeds: Sequence[int], cache: Cache | None = None,
                 progress: bool = False, batch_size: int = 1, nudged: bool = False,
                 desc: str = "float reference clips") -> dict[int, list[np.ndarray]]:
    """``{seed: [clip per sample]}`` as `vidquant.run` generates them (:func:`vidquant.generate.generate_videos`;
    ``nudged``: with the noise floor's one-ulp nudge), computed once per (pipeline weights, samples, settings,
    seeds, batch size). For the float model's clips, which every method and α of a sweep shares."""
    from vidquant.eval.noise import nudge_first_latent

    def compute() -> dict[int, list[np.ndarray]]:
        return generate_videos(pipe, samples, params, seeds, batch_size, nudge_first_latent if nudged else None,
                               progress, desc)

    settings = {**dataclasses.asdict(params), "seed": None}  # the seeds are their own part of the key
    key = _key("clips", model=model_fingerprint(pipe), samples=_sample_key(samples), params=settings,
               seeds=list(seeds), batch_size=batch_size, nudged=nudged)
    return (cache or default_cache()).get(key, compute, keep=_all_finite)


def _all_finite(clips: dict[int, list[np.ndarray]]) -> bool:
    return all(np.isfinite(c).all() for seed_clips in clips.values() for c in seed_clips)
