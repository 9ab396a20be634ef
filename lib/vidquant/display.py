"""How a notebook shows things: where it runs (the first cell's `setup`) and its clips.

A clip is shown as an *animated PNG* with each panel's name drawn above it: a plain ``image/png`` output, so it
plays in JupyterLab whether or not the notebook is trusted, on a code host's notebook view and in any browser,
with no player, script or CDN. `show_clips` can also write the clip as an .mp4 / .gif file beside the run.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vidquant.fsutil import repo_root

__all__ = ["goto_repo_root", "setup", "labelled_strip", "animated_png", "AnimatedClip", "show_clips"]

MIN_HEIGHT = 128  # tiny clips are upscaled (nearest neighbour) to at least this many pixels high
LABEL_HEIGHT = 14


def goto_repo_root() -> Path:
    """`chdir` to the repository root so the notebooks' relative paths (``assets/...``, ``configs/...``,
    ``results/...``) mean the same whether the kernel started in the root (papermill, the sweep) or in
    ``notebooks/`` (JupyterLab). Returns the root."""
    root = repo_root()
    os.chdir(root)
    return root


def setup(*, quiet: bool = True) -> Path:
    """The first cell of every notebook: go to the repository root (:func:`goto_repo_root`), show figures
    inline even when ``MPLBACKEND`` says otherwise (``make`` exports ``Agg``), compact pandas output, and
    (`quiet`) silence third-party chatter (deprecation notices, info logs, the checkpoint-loading bars of
    diffusers / transformers). vidquant's own progress bars and warnings stay visible. Returns the root."""
    import logging
    import warnings

    import pandas as pd

    if quiet:  # before diffusers / tqdm are imported: their import-time warnings are noise in a notebook
        warnings.filterwarnings("ignore", message="IProgress not found")
    root = goto_repo_root()
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        shell = None
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_rows", 40)
    pd.set_option("display.width", 160)
    if quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside diffusers / transformers
        for name in ("diffusers", "transformers", "transformers.image_processing_utils"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from diffusers.utils import logging as dlog
            from transformers.utils import logging as tlog

            dlog.set_verbosity_error()
            dlog.disable_progress_bar()  # checkpoint loading, not generation
            tlog.set_verbosity_error()
            tlog.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    return root


# --------------------------------------------------------------------------------------------- clips
def _upscale(frames: np.ndarray) -> np.ndarray:
    scale = max(1, int(np.ceil(MIN_HEIGHT / frames.shape[1])))
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


def labelled_strip(clips: Mapping[str, np.ndarray], gap: int = 2) -> np.ndarray:
    """The clips side by side (upscaled to at least `MIN_HEIGHT` px), each panel's name written in a white
    band above it: a uint8 ``(frames, LABEL_HEIGHT + H, W, 3)`` array. Clips are ``(frames, H, W, 3)`` floats in
    [0, 1] of the same height; the shortest sets the number of frames."""
    from PIL import Image, ImageDraw, ImageFont

    from vidquant.eval.video import to_uint8

    if not clips:
        raise ValueError("show_clips: no clips given")
    heights = {np.shape(c)[1] for c in clips.values()}
    if len(heights) != 1:
        raise ValueError(f"show_clips: clips of different heights {sorted(heights)}: {list(clips)}")
    n = min(np.shape(c)[0] for c in clips.values())
    panels = [_upscale(to_uint8(np.asarray(c)[:n])) for c in clips.values()]
    h = panels[0].shape[1]
    bar = np.full((n, h, gap, 3), 255, np.uint8)
    body = np.concatenate([p for panel in panels for p in (panel, bar)][:-1], axis=2)
    band = Image.new("RGB", (body.shape[2], LABEL_HEIGHT), "white")
    draw, font = ImageDraw.Draw(band), ImageFont.load_default()
    x = 0
    for name, panel in zip(clips, panels):
        draw.text((x + 2, 1), str(name), fill="black", font=font)
        x += panel.shape[2] + gap
    header = np.broadcast_to(np.asarray(band, np.uint8), (n, *np.asarray(band).shape))
    return np.concatenate([header, body], axis=1)


def animated_png(frames: np.ndarray, fps: int = 8) -> bytes:
    """uint8 ``(frames, H, W, 3)`` as an animated PNG (APNG), looping: a PNG that every browser animates and
    every notebook viewer shows (the first frame where animation is not supported)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in np.asarray(frames, np.uint8)]
    buf = io.BytesIO()
    images[0].save(buf, format="PNG", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                   loop=0, optimize=True)
    return buf.getvalue()


class AnimatedClip:
    """A notebook output: an animated PNG and a one-line text description (for text-only viewers)."""

    def __init__(self, png: bytes, text: str) -> None:
        self.png, self.text = png, text

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": self.text}

    def __repr__(self) -> str:
        return self.text


def show_clips(clips: Mapping[str, np.ndarray], path: str | os.PathLike | None = None, *,
               fps: int = 8) -> AnimatedClip:
    """The clips side by side, each labelled with its name, as a looping animated image (the cell's output).
    With `path` (.mp4 or .gif), the labelled clip is also written there."""
    frames = labelled_strip(clips)
    if path is not None:
        from vidquant.eval.video import save_video

        save_video(frames.astype(np.float32) / 255.0, Path(path), fps=fps)
    where = f", saved to {path}" if path is not None else ""
    text = f"clip: {' | '.join(map(str, clips))} ({frames.shape[0]} frames at {fps} fps{where})"
    return AnimatedClip(animated_png(frames, fps), text)
