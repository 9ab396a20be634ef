"""Procedural video clips: one coloured shape moving across a dark background.

Nothing is read from disk: every clip is rendered from a :class:`ClipSpec`, and every random choice comes
from a seeded ``numpy`` generator, so a (seed, index) pair always gives the same clip. The clips are what the
tiny Wan models are trained on and what the task metrics (``vidquant.eval.task``) score against.

Geometry (defaults): 64×64 frames, 9 frames, background grey 0.08, a 16-px square or circle that travels
28 px (``speed="normal"``) in one of four directions, always fully inside the frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

__all__ = [
    "ALL_PROMPTS",
    "BACKGROUND",
    "COLOURS",
    "DIRECTIONS",
    "FRAME_SIZE",
    "NUM_FRAMES",
    "OBJECT_SIZE",
    "SHAPES",
    "SPEEDS",
    "VOCABULARY",
    "ClipSpec",
    "ProceduralVideoDataset",
    "eval_prompt_set",
    "make_prompt",
    "render_clip",
    "sample_spec",
]

FRAME_SIZE = 64
NUM_FRAMES = 9
OBJECT_SIZE = 16
BACKGROUND = 0.08
# Saturated, well separated colours: the VAE must keep four hues apart through an 8×8 latent.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.12, 0.10),
    "green": (0.10, 0.85, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.10),
}
SHAPES = ("square", "circle")
DIRECTIONS = ("left", "right", "up", "down")
# Pixels travelled between the first and the last frame; the speed word appears in the prompt unless "normal".
SPEEDS: dict[str, int] = {"slow": 16, "normal": 28, "fast": 36}
_SPEED_WORDS = {"slow": "slowly", "normal": "", "fast": "quickly"}
_UNIT_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y grows downwards

VOCABULARY: tuple[str, ...] = tuple(
    ["a", "moving", "on", "dark", "background", "slowly", "quickly"]
    + list(COLOURS) + list(SHAPES) + list(DIRECTIONS)
)


def make_prompt(colour: str, shape: str, direction: str, speed: str = "normal") -> str:
    """The prompt for a clip, e.g. ``"a red square moving left on a dark background"``."""
    speed_word = _SPEED_WORDS[speed]
    motion = f"moving {direction} {speed_word}".strip()
    return f"a {colour} {shape} {motion} on a dark background"


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip. ``x0, y0`` is the object's top-left corner in the first frame."""

    colour: str
    shape: str
    direction: str
    x0: float
    y0: float
    speed: str = "normal"
    num_frames: int = NUM_FRAMES
    size: int = FRAME_SIZE

    @property
    def prompt(self) -> str:
        return make_prompt(self.colour, self.shape, self.direction, self.speed)

    @property
    def attributes(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "direction": self.direction, "speed": self.speed}

    def render(self) -> np.ndarray:
        """The clip as float32 ``T×H×W×3`` in [0, 1]."""
        return render_clip(self)

    def first_frame(self) -> Image.Image:
        """The first frame as an RGB PIL image (the I2V conditioning image)."""
        return _to_pil(render_clip(replace(self, num_frames=1))[0])


def _to_pil(frame: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")


def _coverage_1d(lo: float, hi: float, size: int) -> np.ndarray:
    """Fraction of each pixel [i, i+1) covered by the interval [lo, hi): anti-aliased sub-pixel edges."""
    left = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(left + 1.0, hi) - np.maximum(left, lo), 0.0, 1.0)


def _shape_mask(shape: str, x: float, y: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (H×W in [0, 1]) of a shape with top-left corner (x, y)."""
    if shape == "square":
        return np.outer(_coverage_1d(y, y + OBJECT_SIZE, size), _coverage_1d(x, x + OBJECT_SIZE, size))
    if shape == "circle":
        radius = OBJECT_SIZE / 2.0
        centres = np.arange(size, dtype=np.float64) + 0.5
        dist = np.hypot(centres[None, :] - (x + radius), centres[:, None] - (y + radius))
        return np.clip(radius - dist + 0.5, 0.0, 1.0)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Render a clip as float32 ``T×H×W×3`` in [0, 1]; the object moves linearly over the clip."""
    dx, dy = _UNIT_STEP[spec.direction]
    travel = SPEEDS[spec.speed]
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float64)
    frames = np.empty((spec.num_frames, spec.size, spec.size, 3), dtype=np.float32)
    for t in range(spec.num_frames):
        frac = t / max(spec.num_frames - 1, 1)  # the whole travel happens between the first and last frame
        mask = _shape_mask(spec.shape, spec.x0 + dx * travel * frac, spec.y0 + dy * travel * frac, spec.size)
        frames[t] = BACKGROUND + mask[..., None] * (colour - BACKGROUND)
    return frames


def _start_range(direction_step: int, travel: int, size: int) -> tuple[float, float]:
    """Range of the start coordinate along one axis so that the object stays inside the frame."""
    hi = float(size - OBJECT_SIZE)
    if direction_step > 0:
        return 0.0, hi - travel
    if direction_step < 0:
        return float(travel), hi
    return 0.0, hi


def sample_spec(
    rng: np.random.Generator,
    colour: str | None = None,
    shape: str | None = None,
    direction: str | None = None,
    speed: str = "normal",
    size: int = FRAME_SIZE,
) -> ClipSpec:
    """Draw a clip; attributes left as None are drawn uniformly, the start position uniformly in range."""
    colour = colour or str(rng.choice(list(COLOURS)))
    shape = shape or str(rng.choice(SHAPES))
    direction = direction or str(rng.choice(DIRECTIONS))
    dx, dy = _UNIT_STEP[direction]
    travel = SPEEDS[speed]
    x0 = rng.uniform(*_start_range(dx, travel, size))
    y0 = rng.uniform(*_start_range(dy, travel, size))
    return ClipSpec(colour, shape, direction, float(x0), float(y0), speed=speed, size=size)


def _combinations() -> list[tuple[str, str, str]]:
    """All (colour, shape, direction) combinations, in a fixed order."""
    return list(itertools.product(COLOURS, SHAPES, DIRECTIONS))


ALL_PROMPTS: tuple[str, ...] = tuple(make_prompt(c, s, d) for c, s, d in _combinations())


def eval_prompt_set(seed: int = 2024) -> list[ClipSpec]:
    """The fixed evaluation set: all 32 (colour, shape, direction) combinations, normal speed.

    Each item carries its prompt and attributes; its start position (fixed by ``seed``) gives the ground-truth
    clip and the I2V first frame. Order matches :data:`ALL_PROMPTS`.
    """
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, colour=c, shape=s, direction=d) for c, s, d in _combinations()]


class ProceduralVideoDataset:
    """An indexable, deterministic stream of clips: item ``i`` depends only on ``(seed, i)``.

    Items are dicts with ``video`` (T×H×W×3 float32 in [0, 1]), ``prompt``, ``spec`` and ``first_frame``
    (PIL).
    With ``balanced=True`` item ``i`` uses combination ``i % 32`` so every batch of 32 covers all prompts.
    """

    def __init__(
        self, seed: int = 0, length: int = 1024, balanced: bool = True, speeds: tuple[str, ...] = ("normal",)
    ):
        self.seed = seed
        self.length = length
        self.balanced = balanced
        self.speeds = speeds
        self._combos = _combinations()

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> ClipSpec:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        speed = str(rng.choice(self.speeds))
        if self.balanced:
            colour, shape, direction = self._combos[index % len(self._combos)]
            return sample_spec(rng, colour=colour, shape=shape, direction=direction, speed=speed)
        return sample_spec(rng, speed=speed)

    def __getitem__(self, index: int) -> dict:
        spec = self.spec(index)
        return {"video": spec.render(), "prompt": spec.prompt, "spec": spec,
                "first_frame": spec.first_frame()}

    def __iter__(self) -> Iterator[dict]:
        for i in range(self.length):
            yield self[i]
