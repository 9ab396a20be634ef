"""Video fidelity of a (quantized) model's clip against the float model's clip of the same seed and prompt.

All functions take clips as ``T×H×W×3`` arrays in [0, 1] (see :func:`as_frames` for what is accepted).

Definitions:

- **PSNR** (dB) over the whole clip, data range 1 (scikit-image); ``inf`` for identical clips.
- **SSIM**: scikit-image's ``structural_similarity`` per frame (colour, data range 1), averaged over frames.
- **Temporal flicker** of one clip: mean absolute frame-to-frame difference, ``mean |x[t+1] - x[t]|``,
  i.e. how much the clip changes per frame (motion plus flicker). A sanity number for a single clip.
- **Flicker error** of a clip against a reference: ``mean |(x[t+1] - x[t]) - (r[t+1] - r[t])|``, the error
  in the frame-to-frame differences. A constant offset in every frame costs PSNR but no flicker error;
  noise or jitter that changes from frame to frame costs both. 0 for identical clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["as_frames", "split_clips", "psnr", "ssim", "temporal_flicker", "flicker_error", "video_fidelity"]


def _pil_to_array(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def as_frames(clip: Any) -> np.ndarray:
    """Convert one clip to float32 ``T×H×W×3`` in [0, 1].

    Accepts a numpy array or torch tensor ``T×H×W×3`` (float in [0, 1] or uint8), a batch of one
    ``1×T×H×W×3``, a list of PIL images, or a diffusers pipeline output holding one clip (``.frames``).
    """
    if hasattr(clip, "frames"):
        clips = split_clips(clip)
        if len(clips) != 1:
            raise ValueError(f"pipeline output holds {len(clips)} clips; use split_clips()")
        return clips[0]
    if isinstance(clip, Sequence) and clip and hasattr(clip[0], "convert"):
        return np.stack([_pil_to_array(im) for im in clip])
    if hasattr(clip, "detach"):  # torch tensor, without importing torch here
        clip = clip.detach().float().cpu().numpy()
    arr = np.asarray(clip)
    if arr.ndim == 5 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected a clip T×H×W×3, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32, copy=False)


def split_clips(output: Any) -> list[np.ndarray]:
    """Split a batched pipeline output (``.frames``: ``B×T×H×W×3`` array or list of PIL lists) into clips."""
    frames = output.frames if hasattr(output, "frames") else output
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return [as_frames(frames)]
        return [as_frames(clip) for clip in frames]
    return [as_frames(clip) for clip in frames]


def _check_pair(clip: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_frames(clip), as_frames(reference)
    if a.shape != b.shape:
        raise ValueError(f"clip shapes differ: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(clip: Any, reference: Any) -> float:
    """PSNR in dB over the whole clip (data range 1); ``inf`` when the clips are identical."""
    a, b = _check_pair(clip, reference)
    if np.array_equal(a, b):
        return float("inf")  # skimage would divide by zero (and warn) here
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(clip: Any, reference: Any) -> float:
    """Mean over frames of scikit-image's colour SSIM (data range 1); 1.0 for identical clips."""
    a, b = _check_pair(clip, reference)
    scores = [structural_similarity(b[t], a[t], channel_axis=-1, data_range=1.0) for t in range(a.shape[0])]
    return float(np.mean(scores))


def temporal_flicker(clip: Any) -> float:
    """Mean absolute frame-to-frame difference of one clip (0 for a still clip)."""
    a = as_frames(clip).astype(np.float64)
    if a.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(a, axis=0)).mean())


def flicker_error(clip: Any, reference: Any) -> float:
    """Mean absolute error of the frame-to-frame differences against the reference (0 when identical)."""
    a, b = _check_pair(clip, reference)
    if a.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(a, axis=0) - np.diff(b, axis=0)).mean())


def video_fidelity(clip: Any, reference: Any) -> dict[str, float]:
    """All fidelity numbers of ``clip`` against ``reference`` (the float model's clip)."""
    return {
        "psnr": psnr(clip, reference),
        "ssim": ssim(clip, reference),
        "flicker_error": flicker_error(clip, reference),
        "temporal_flicker": temporal_flicker(clip),
        "temporal_flicker_ref": temporal_flicker(reference),
    }
