"""Continuous task errors against the prompt (vidquant.eval.task): ~0 on ground-truth procedural clips, and
growing with the perturbation (blur, colour shift, offset, wrong speed); task drift against a reference clip:
the known offset or colour difference of a shifted or recoloured clip."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift
from skimage.color import deltaE_ciede2000, rgb2lab

from vidquant.data.procedural import COLOURS, eval_prompt_set
from vidquant.eval.task import (
    centroid_track,
    colour_error,
    prompt_attributes,
    task_drift,
    task_errors,
    trajectory_error,
)

SPECS = eval_prompt_set()[::5]  # both shapes, every colour and direction


def test_prompt_attributes():
    assert prompt_attributes("a blue circle moving up quickly on a dark background") == {
        "colour": "blue", "shape": "circle", "direction": "up", "speed": "fast"}
    assert prompt_attributes("a red square moving left on a dark background")["speed"] == "normal"
    assert prompt_attributes("an astronaut riding a horse") is None
    assert task_errors(np.zeros((3, 8, 8, 3)), "an astronaut riding a horse") == {}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.prompt)
def test_ground_truth_is_near_zero(spec):
    err = task_errors(spec.render(), spec.prompt)
    assert err["traj_err_px"] < 0.05 and err["colour_de"] < 0.1


def test_centroid_follows_the_object():
    spec = SPECS[0]
    track = centroid_track(spec.render())
    assert track[0] == pytest.approx([spec.x0 + 8, spec.y0 + 8], abs=0.05)


def test_wrong_motion_costs_its_speed_difference():
    """A clip moving fast scored against 'normal' speed: error = (36 - 28) / 8 px per frame; against the
    opposite direction: 2 · 28 / 8."""
    spec = replace(SPECS[0], speed="fast", x0=40.0)
    clip = spec.render()
    assert trajectory_error(clip, spec.direction, "normal") == pytest.approx(1.0, abs=0.05)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[spec.direction]
    assert trajectory_error(clip, opposite, "fast") == pytest.approx(2 * 36 / 8, abs=0.05)


def _jitter(clip, px, seed=0):
    offsets = np.random.default_rng(seed).normal(0, px, (clip.shape[0], 2))
    return np.stack([shift(f, (dy, dx, 0), order=1, mode="nearest") for f, (dy, dx) in zip(clip, offsets)])


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.prompt)
def test_errors_grow_with_perturbation(spec):
    clip = spec.render()
    traj = [trajectory_error(_jitter(clip, px), spec.direction) for px in (0.0, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(traj) > 0), traj
    colour = [colour_error(np.clip(clip + np.array([0.0, d, -d]), 0, 1), spec.colour) for d in (0, .02, .05, .1)]
    assert np.all(np.diff(colour) > 0), colour
    blurred = [colour_error(gaussian_filter(clip, (0, s, s, 0)), spec.colour) for s in (0.0, 2.0, 4.0)]
    assert np.all(np.diff(blurred) > 0), blurred
    # a constant offset of the whole clip moves the object but not its motion
    assert trajectory_error(np.roll(clip, 3, axis=2), spec.direction) < 0.05


def test_no_object_gives_nan():
    blank = np.full((9, 64, 64, 3), 0.08, dtype=np.float32)
    assert np.isnan(trajectory_error(blank, "left")) and np.isnan(colour_error(blank, "red"))


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.prompt)
def test_drift_measures_offset_and_recolouring(spec):
    """Shifting the whole clip by (3, 4) px moves the object 5 px in every frame; recolouring the object to
    another palette colour gives the two colours' CIEDE2000 distance; the clip against itself drifts by 0."""
    clip = spec.render()
    assert task_drift(clip, clip) == {"traj_drift_px": 0.0, "colour_drift_de": 0.0}
    moved = np.roll(clip, (4, 3), axis=(1, 2))  # 4 px down, 3 px right: the object stays inside the frame
    assert task_drift(moved, clip)["traj_drift_px"] == pytest.approx(5.0, abs=0.05)
    other = next(c for c in COLOURS if c != spec.colour)
    recoloured = replace(spec, colour=other).render()
    lab = rgb2lab(np.array([[COLOURS[spec.colour], COLOURS[other]]], dtype=np.float64))[0]
    drift = task_drift(recoloured, clip)
    assert drift["colour_drift_de"] == pytest.approx(deltaE_ciede2000(lab[0], lab[1]), rel=0.02)
    assert drift["traj_drift_px"] < 0.05  # the same motion


def test_drift_without_object_is_nan():
    blank = np.full((9, 64, 64, 3), 0.08, dtype=np.float32)
    drift = task_drift(blank, SPECS[0].render())
    assert np.isnan(drift["traj_drift_px"]) and np.isnan(drift["colour_drift_de"])
