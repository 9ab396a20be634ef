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

The binary hits above saturate (every format of the tiny models gets them all right), so :func:`task_errors`
also measures, against the prompt (not against the float clip), two continuous errors:

- **trajectory error** (pixels per frame): the object's centroid is the foreground-weighted mean position in each
  frame (weights = distance from the background, so anti-aliased edges count by coverage); its frame-to-frame
  displacement is compared with the prompt's motion, ``unit(direction) · SPEEDS[speed] / (T - 1)``, and the
  error is the mean Euclidean norm of the difference over consecutive frame pairs with an object;
- **colour error** (CIEDE2000 ΔE, scikit-image): the per-channel median colour of the foreground pixels of the
  whole clip (the median ignores edge pixels mixed with the background) against the prompt's palette colour,
  both in CIELAB. ΔE ≈ 1 is a just-noticeable difference.

Against the prompt, these errors include the model's own imperfection (the tiny float model misses the prompted
motion by ~0.5 px/frame and the palette colour by ΔE ~6), which is larger than what W8A8 or W4A8 quantization
changes. :func:`task_drift` therefore also measures the same two quantities against the float model's clip at the
same prompt and seed, where that common error cancels:

- **trajectory drift** (pixels): the mean distance between the two clips' object centroids, frame by frame;
- **colour drift** (CIEDE2000 ΔE): between the two clips' median foreground colours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from skimage.color import deltaE_ciede2000, rgb2lab

from vidquant.data.procedural import COLOURS, DIRECTIONS, SHAPES, SPEEDS, ClipSpec, eval_prompt_set
from vidquant.eval.metrics import as_frames, split_clips

__all__ = [
    "FG_THRESHOLD",
    "MIN_SHIFT_PX",
    "Detection",
    "detect",
    "score_clips",
    "evaluate_pipeline",
    "generate_eval_clips",
    "prompt_attributes",
    "centroid_track",
    "trajectory_error",
    "colour_error",
    "task_errors",
    "task_drift",
    "DRIFT_METRICS",
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


_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # (dx, dy)
_SPEED_WORDS = {"slowly": "slow", "quickly": "fast"}
_CENTROID_MIN_WEIGHT = 0.1  # background noise of a generated clip below this distance does not pull the centroid


def prompt_attributes(prompt: str) -> dict[str, str] | None:
    """Colour, shape, direction and speed of a procedural prompt ('a red square moving left quickly ...');
    None when the prompt does not name exactly one of each (a non-procedural prompt)."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    attrs = {}
    for attr, vocab in (("colour", tuple(COLOURS)), ("shape", SHAPES), ("direction", DIRECTIONS)):
        hits = [w for w in vocab if w in words]
        if len(hits) != 1:
            return None
        attrs[attr] = hits[0]
    speeds = [_SPEED_WORDS[w] for w in _SPEED_WORDS if w in words]
    if len(speeds) > 1:
        return None
    attrs["speed"] = speeds[0] if speeds else "normal"
    return attrs


def centroid_track(clip: Any) -> np.ndarray:
    """Object centroid ``(x, y)`` in pixels per frame (``T×2``), NaN in frames without an object."""
    frames = as_frames(clip).astype(np.float64)
    background = np.median(frames.reshape(frames.shape[0], -1, 3), axis=1)
    weight = np.abs(frames - background[:, None, None, :]).max(axis=-1)  # T×H×W
    fg = _foreground(frames)
    weight = np.where(weight >= _CENTROID_MIN_WEIGHT, weight, 0.0)
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]] + 0.5  # pixel centres
    track = np.full((frames.shape[0], 2), np.nan)
    for t in range(frames.shape[0]):
        total = weight[t].sum()
        if fg[t].sum() >= MIN_FG_PIXELS and total > 0:
            track[t] = (weight[t] * xs).sum() / total, (weight[t] * ys).sum() / total
    return track


def trajectory_error(clip: Any, direction: str, speed: str = "normal") -> float:
    """Mean |observed - prompted| centroid displacement per frame, in pixels per frame (NaN: < 2 frames with an
    object next to each other)."""
    track = centroid_track(clip)
    expected = np.asarray(_UNIT[direction]) * SPEEDS[speed] / max(track.shape[0] - 1, 1)
    steps = np.diff(track, axis=0)
    steps = steps[np.isfinite(steps).all(axis=1)]
    if steps.size == 0:
        return float("nan")
    return float(np.linalg.norm(steps - expected, axis=1).mean())


def object_colour(clip: Any) -> np.ndarray | None:
    """The per-channel median RGB of the clip's foreground pixels (None: no object)."""
    frames = as_frames(clip).astype(np.float64)
    fg = _foreground(frames)
    return np.median(frames[fg], axis=0) if fg.sum() >= MIN_FG_PIXELS else None


def _delta_e(rgb_a: np.ndarray, rgb_b: np.ndarray) -> float:
    lab = rgb2lab(np.stack([rgb_a, rgb_b])[None])[0]
    return float(deltaE_ciede2000(lab[0], lab[1]))


def colour_error(clip: Any, colour: str) -> float:
    """CIEDE2000 ΔE of the clip's median foreground colour against the prompt's colour (NaN: no object)."""
    observed = object_colour(clip)
    return float("nan") if observed is None else _delta_e(observed, np.asarray(COLOURS[colour], dtype=np.float64))


DRIFT_METRICS = ("traj_drift_px", "colour_drift_de")


def task_drift(clip: Any, reference: Any) -> dict[str, float]:
    """``traj_drift_px`` (mean per-frame distance between the object centroids of ``clip`` and the float clip
    ``reference``, over the frames where both show the object; pixels) and ``colour_drift_de`` (CIEDE2000 ΔE
    between their object colours). NaN where either clip has no object."""
    steps = np.linalg.norm(centroid_track(clip) - centroid_track(reference), axis=1)
    steps = steps[np.isfinite(steps)]
    observed, expected = object_colour(clip), object_colour(reference)
    return {"traj_drift_px": float(steps.mean()) if steps.size else float("nan"),
            "colour_drift_de": float("nan") if observed is None or expected is None else _delta_e(observed, expected)}


def task_errors(clip: Any, prompt: str) -> dict[str, float]:
    """``traj_err_px`` and ``colour_de`` of a clip against its procedural prompt; {} for other prompts."""
    attrs = prompt_attributes(prompt)
    if attrs is None:
        return {}
    return {"traj_err_px": trajectory_error(clip, attrs["direction"], attrs["speed"]),
            "colour_de": colour_error(clip, attrs["colour"])}


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
