"""Procedural data, the task detector and the video fidelity metrics (fast, no models)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from vidquant.data import ALL_PROMPTS, ProceduralVideoDataset, eval_prompt_set
from vidquant.data.procedural import BACKGROUND, FRAME_SIZE, NUM_FRAMES
from vidquant.eval.metrics import (
    as_frames,
    flicker_error,
    psnr,
    split_clips,
    ssim,
    temporal_flicker,
    video_fidelity,
)
from vidquant.eval.task import detect, score_clips

# ---------------------------------------------------------------------------------------------- data


def test_eval_set_covers_all_32_combinations_in_prompt_order():
    specs = eval_prompt_set()
    assert len(specs) == 32 == len(set(ALL_PROMPTS))
    assert [s.prompt for s in specs] == list(ALL_PROMPTS)
    assert specs[0].prompt == "a red square moving left on a dark background"
    assert {tuple(s.attributes[k] for k in ("colour", "shape", "direction")) for s in specs}.__len__() == 32


def test_dataset_is_deterministic_and_in_range():
    a, b = ProceduralVideoDataset(seed=5, length=40), ProceduralVideoDataset(seed=5, length=40)
    for i in (0, 7, 39):
        np.testing.assert_array_equal(a[i]["video"], b[i]["video"])
    assert not np.array_equal(a[0]["video"], ProceduralVideoDataset(seed=6, length=40)[0]["video"])
    clip = a[3]["video"]
    assert clip.shape == (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3) and clip.dtype == np.float32
    assert clip.min() >= 0.0 and clip.max() <= 1.0
    assert isinstance(a[3]["first_frame"], Image.Image) and a[3]["first_frame"].size == (FRAME_SIZE, FRAME_SIZE)


def test_object_stays_inside_the_frame():
    data = ProceduralVideoDataset(seed=1, length=64, speeds=("slow", "normal", "fast"))
    for i in range(len(data)):
        clip = data[i]["video"]
        object_mass = np.abs(clip - BACKGROUND).max(axis=-1).sum(axis=(1, 2))
        assert object_mass.std() / object_mass.mean() < 0.02  # never clipped by a border


def test_first_frame_matches_clip():
    spec = eval_prompt_set()[5]
    frame = np.asarray(spec.first_frame(), dtype=np.float32) / 255.0
    np.testing.assert_allclose(frame, spec.render()[0], atol=1 / 255)


# ---------------------------------------------------------------------------------------------- detector


def test_detector_is_perfect_on_ground_truth_eval_clips():
    specs = eval_prompt_set()
    df, summary = score_clips([s.render() for s in specs], specs)
    assert summary["colour_acc"] == summary["direction_acc"] == summary["shape_acc"] == 1.0
    assert summary["colour_consistency"] == 1.0 and len(df) == 32


def test_detector_is_perfect_on_random_clips_at_all_speeds():
    data = ProceduralVideoDataset(seed=11, length=96, balanced=False, speeds=("slow", "normal", "fast"))
    specs = [data.spec(i) for i in range(len(data))]
    _, summary = score_clips([s.render() for s in specs], specs)
    assert summary["colour_acc"] == summary["direction_acc"] == summary["shape_acc"] == 1.0


def test_detector_scores_mismatches():
    spec = eval_prompt_set()[0]  # red square moving left
    wrong = dataclasses.replace(spec, direction="right", x0=4.0)
    df, summary = score_clips([wrong.render()], [spec])
    assert df.loc[0, "det_direction"] == "right" and summary["direction_acc"] == 0.0
    assert summary["colour_acc"] == 1.0


def test_detector_on_empty_and_static_clips():
    empty = np.full((NUM_FRAMES, 64, 64, 3), BACKGROUND, dtype=np.float32)
    assert detect(empty).direction == "none" and detect(empty).colour == "none"
    static = np.repeat(eval_prompt_set()[0].render()[:1], NUM_FRAMES, axis=0)
    assert detect(static).direction == "static"


def test_detector_accepts_pipeline_output_formats():
    clip = eval_prompt_set()[9].render()
    expected = detect(clip)
    as_uint8 = np.round(clip * 255).astype(np.uint8)
    pil_frames = [Image.fromarray(f) for f in as_uint8]
    for variant in (clip[None], torch.from_numpy(clip), as_uint8, pil_frames):
        det = detect(variant)
        assert (det.colour, det.direction, det.shape) == (expected.colour, expected.direction, expected.shape)


def test_split_clips_on_batched_output():
    class Output:  # what WanPipeline returns with output_type="np"
        frames = np.stack([s.render() for s in eval_prompt_set()[:3]])

    clips = split_clips(Output())
    assert len(clips) == 3 and clips[0].shape == (NUM_FRAMES, 64, 64, 3)
    with pytest.raises(ValueError):
        as_frames(Output())


# ---------------------------------------------------------------------------------------------- fidelity


@pytest.fixture
def clip() -> np.ndarray:
    return eval_prompt_set()[3].render()


def test_metrics_of_a_clip_against_itself(clip):
    assert psnr(clip, clip) == float("inf")
    assert ssim(clip, clip) == pytest.approx(1.0)
    assert flicker_error(clip, clip) == 0.0
    scores = video_fidelity(clip, clip)
    assert scores["temporal_flicker"] == scores["temporal_flicker_ref"] > 0


def test_metrics_degrade_with_noise(clip):
    rng = np.random.default_rng(0)
    small = np.clip(clip + rng.normal(0, 0.02, clip.shape), 0, 1).astype(np.float32)
    large = np.clip(clip + rng.normal(0, 0.1, clip.shape), 0, 1).astype(np.float32)
    assert 20 < psnr(large, clip) < psnr(small, clip) < 40
    assert ssim(large, clip) < ssim(small, clip) < 1.0
    assert 0 < flicker_error(small, clip) < flicker_error(large, clip)


def test_constant_offset_costs_psnr_but_not_flicker(clip):
    shifted = clip + 0.05
    assert psnr(shifted, clip) == pytest.approx(26.02, abs=0.01)
    assert flicker_error(shifted, clip) == pytest.approx(0.0, abs=1e-7)


def test_temporal_flicker_of_a_still_clip_is_zero(clip):
    assert temporal_flicker(np.repeat(clip[:1], NUM_FRAMES, axis=0)) == 0.0


def test_metrics_reject_mismatched_shapes(clip):
    with pytest.raises(ValueError):
        psnr(clip, clip[:-1])
