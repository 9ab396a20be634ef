"""Video files: clips are float arrays (frames, H, W, 3) in [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

__all__ = ["save_video", "load_video", "side_by_side", "to_uint8"]


def to_uint8(clip: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(clip, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_video(clip: np.ndarray, path: str | os.PathLike, fps: int = 16) -> Path:
    """Write an .mp4 (H.264 via imageio-ffmpeg) or .gif, by extension. Frames are upscaled to at least
    128 px so tiny clips stay visible and even-sized for H.264."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(clip)
    scale = max(1, int(np.ceil(128 / min(frames.shape[1:3]))))
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        _write_ffmpeg(path, frames, fps)
    return path


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"]) as writer:
        for f in frames:
            writer.append_data(f)


def load_video(path: str | os.PathLike) -> np.ndarray:
    return np.asarray(iio.imread(path), dtype=np.float32) / 255.0


def side_by_side(*clips: np.ndarray, gap: int = 2) -> np.ndarray:
    """Clips of equal length and height next to each other, separated by a white bar."""
    frames = min(c.shape[0] for c in clips)
    h = max(c.shape[1] for c in clips)
    bar = np.ones((frames, h, gap, 3), dtype=np.float32)
    parts = []
    for i, c in enumerate(clips):
        parts.append(np.asarray(c[:frames], dtype=np.float32))
        if i < len(clips) - 1:
            parts.append(bar)
    return np.concatenate(parts, axis=2)
