"""Task metrics: does a generated clip show what its prompt asked for?

A deterministic detector reads colour, direction of motion and shape from the frames of a procedural-style
clip (one object on a dark, flat background) and the clip is scored against the prompt's attributes.

Detector:

- background = per-frame median colour; foreground = pixels more than ``FG_THRESHOLD`` from it in any channel;
- colour = the palette colour nearest to the mean foreground colour over the whole clip;
- direction = the larger axis of the foreground-centroid shift from the first to the last frame that has a
  foreground (``"static"`` when the shift is under ``MIN_SHIFT_PX``; ``"none"`` when no frame has one);
- shape = the median bounding-box fill ratio (a square fills ~1.0, a circle ~pi/4). Reliable on clean clips;
  generated clips blur corners, so shape accuracy is reported but not part of the headline numbers.

For I2V the direction is scored against the prompt (the first frame fixes colour and position, the text fixes
the direction) and ``colour_consistent`` checks that the generated clip keeps the first frame's colour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vidquant.data.procedural import COLOURS, ClipSpec, eval_prompt_set
from vidquant.eval.metrics import as_frames, split_clips

__all__ = [
    "FG_THRESHOLD",
    "MIN_SHIFT_PX",
    "Detection",
    "detect",
    "score_clips",
    "evaluate_pipeline",
    "generate_eval_clips",
]

FG_THRESHOLD = 0.3
MIN_SHIFT_PX = 4.0
MIN_FG_PIXELS = 4  # fewer foreground pixels than this in a frame counts as "no object in this frame"
SQUARE_FILL = 0.89  # between pi/4 (circle, 0.785) and 1.0 (square)
_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.asarray([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class Detection:
    """What the detector read from one clip."""

    colour: str
    direction: str
    shape: str
    first_colour: str  # colour of the object in the first frame with a foreground
    shift_x: float  # centroid shift, first → last foreground frame, in pixels (x to the right, y downwards)
    shift_y: float
    fg_fraction: float  # mean fraction of foreground pixels per frame

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _foreground(frames: np.ndarray) -> np.ndarray:
    background = np.median(frames.reshape(frames.shape[0], -1, 3), axis=1)  # T×3
    return (np.abs(frames - background[:, None, None, :]) > FG_THRESHOLD).any(axis=-1)


def _nearest_colour(rgb: np.ndarray) -> str:
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE - rgb) ** 2).sum(axis=1)))]


def _direction(shift_x: float, shift_y: float) -> str:
    if max(abs(shift_x), abs(shift_y)) < MIN_SHIFT_PX:
        return "static"
    if abs(shift_x) >= abs(shift_y):
        return "right" if shift_x > 0 else "left"
    return "down" if shift_y > 0 else "up"


def _fill_ratio(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return float(mask.sum() / box)


def detect(clip: Any) -> Detection:
    """Read colour, direction and shape from one clip (see the module docstring for the rules)."""
    frames = as_frames(clip).astype(np.float64)
    fg = _foreground(frames)
    present = [t for t in range(fg.shape[0]) if fg[t].sum() >= MIN_FG_PIXELS]
    if not present:
        return Detection("none", "none", "none", "none", 0.0, 0.0, 0.0)
    first, last = present[0], present[-1]
    mean_rgb = frames[fg].mean(axis=0)
    centroids = {t: np.argwhere(fg[t]).mean(axis=0) for t in (first, last)}  # (y, x)
    shift_y, shift_x = (centroids[last] - centroids[first]).tolist()
    fill = float(np.median([_fill_ratio(fg[t]) for t in present]))
    return Detection(
        colour=_nearest_colour(mean_rgb),
        direction=_direction(shift_x, shift_y),
        shape="square" if fill >= SQUARE_FILL else "circle",
        first_colour=_nearest_colour(frames[first][fg[first]].mean(axis=0)),
        shift_x=float(shift_x),
        shift_y=float(shift_y),
        fg_fraction=float(fg.mean()),
    )


def score_clips(clips: Sequence[Any], specs: Sequence[ClipSpec]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Score clips against the attributes of their specs.

    Returns one row per clip (prompt, expected and detected attributes, hits) and a summary with
    ``colour_acc``, ``direction_acc``, ``shape_acc``, ``colour_consistency`` (detected colour equals the
    colour of the clip's own first frame) and ``n``.
    """
    if len(clips) != len(specs):
        raise ValueError(f"{len(clips)} clips for {len(specs)} specs")
    rows = []
    for clip, spec in zip(clips, specs):
        det = detect(clip)
        rows.append({
            "prompt": spec.prompt,
            "colour": spec.colour,
            "shape": spec.shape,
            "direction": spec.direction,
            "det_colour": det.colour,
            "det_shape": det.shape,
            "det_direction": det.direction,
            "det_first_colour": det.first_colour,
            "shift_x": det.shift_x,
            "shift_y": det.shift_y,
            "fg_fraction": det.fg_fraction,
            "colour_ok": det.colour == spec.colour,
            "direction_ok": det.direction == spec.direction,
            "shape_ok": det.shape == spec.shape,
            "colour_consistent": det.colour == det.first_colour and det.colour != "none",
        })
    df = pd.DataFrame(rows)
    summary = {
        "n": len(df),
        "colour_acc": float(df["colour_ok"].mean()),
        "direction_acc": float(df["direction_ok"].mean()),
        "shape_acc": float(df["shape_ok"].mean()),
        "colour_consistency": float(df["colour_consistent"].mean()),
    }
    return df, summary


def generate_eval_clips(
    pipe: Any,
    task: str,
    specs: Sequence[ClipSpec] | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    **pipe_kwargs: Any,
) -> list[np.ndarray]:
    """Generate one clip per spec with a Wan pipeline (T2V: from the prompt; I2V: prompt + first frame).

    Clip ``i`` uses a generator seeded with ``seed + i``, so results do not depend on ``batch_size``.
    """
    import torch  # local: the detector itself needs no torch

    specs = list(specs) if specs is not None else eval_prompt_set()
    spec0 = specs[0]
    common = dict(height=spec0.size, width=spec0.size, num_frames=spec0.num_frames,
                  num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, output_type="np")
    common.update(pipe_kwargs)
    step = batch_size if task == "t2v" else 1  # the I2V pipeline conditions a call on a single image
    clips: list[np.ndarray] = []
    for start in range(0, len(specs), step):
        chunk = specs[start:start + step]
        gens = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
        if task == "t2v":
            out = pipe(prompt=[s.prompt for s in chunk], generator=gens, **common)
        elif task == "i2v":
            out = pipe(image=chunk[0].first_frame(), prompt=chunk[0].prompt, generator=gens[0], **common)
        else:
            raise ValueError(f"task must be 't2v' or 'i2v', got {task!r}")
        clips.extend(split_clips(out))
        if progress is not None:
            progress(len(clips), len(specs))
    return clips


def evaluate_pipeline(
    pipe: Any,
    task: str,
    specs: Sequence[ClipSpec] | None = None,
    **generate_kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Generate the eval set with ``pipe`` and score it (see :func:`score_clips`)."""
    specs = list(specs) if specs is not None else eval_prompt_set()
    clips = generate_eval_clips(pipe, task, specs, **generate_kwargs)
    return score_clips(clips, specs)
