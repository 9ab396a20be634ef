"""Sample sets and the capture of block-0 inputs: which calls, cond and uncond, nothing swallowed."""

from __future__ import annotations

import json

import pytest
import torch

from vidquant.calib import SampleSetError, capture_block_inputs, i2v_size, load_samples, select_calls
from vidquant.generate import GenParams
from vidquant.models import load_pipeline


def test_select_calls_first_is_llmc():
    # LLMC: sample_steps=40 with CFG and 50 steps = the first 20 steps, both branches
    assert select_calls(50, 2, 40, "first") == list(range(40))


def test_select_calls_uniform_spreads_over_trajectory():
    calls = select_calls(50, 2, 40, "uniform")
    steps = sorted({c // 2 for c in calls})
    assert len(calls) == 40 and steps[0] == 0 and steps[-1] == 49
    assert all(c // 2 * 2 in calls and c // 2 * 2 + 1 in calls for c in calls)  # both branches per step
    assert select_calls(4, 1, 2, "uniform") == [0, 3]


def test_i2v_size_matches_llmc():
    # the shipped 1184x880 astronaut gives 544 x 720 (llmc_reference §11 item 19)
    assert i2v_size((880, 1184), 480, 832) == (544, 720)


def test_shipped_sample_sets_load():
    assert len(load_samples("assets/calib/tiny_t2v", "t2v")) == 4
    i2v = load_samples("assets/eval/tiny_i2v", "i2v")
    assert all(s.image is not None and s.image.is_file() for s in i2v)


def _set(tmp_path, entries):
    (tmp_path / "samples.json").write_text(json.dumps(entries) if not isinstance(entries, str) else entries)
    return tmp_path


def test_sample_set_errors(tmp_path):
    with pytest.raises(SampleSetError, match="samples.json: not found"):
        load_samples(tmp_path, "t2v")
    with pytest.raises(SampleSetError, match="non-empty JSON list"):
        load_samples(_set(tmp_path, []), "t2v")
    with pytest.raises(SampleSetError, match="not valid JSON"):
        load_samples(_set(tmp_path, "[{"), "t2v")
    with pytest.raises(SampleSetError, match="sample 0: 'image' is required for i2v"):
        load_samples(_set(tmp_path, [{"prompt": "x"}]), "i2v")
    with pytest.raises(SampleSetError, match="image .*missing.png does not exist"):
        load_samples(_set(tmp_path, [{"prompt": "x", "image": "missing.png"}]), "i2v")
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(SampleSetError, match="fake.png is not a readable image"):
        load_samples(_set(tmp_path, [{"prompt": "x", "image": "fake.png"}]), "i2v")
    with pytest.raises(SampleSetError, match="'prompt' must be a non-empty string"):
        load_samples(_set(tmp_path, [{"negative_prompt": "x"}]), "t2v")


@pytest.mark.parametrize("selection", ["first", "uniform"])
def test_capture_counts_steps_and_branches(tiny_t2v_dir, selection):
    pipe = load_pipeline(tiny_t2v_dir, dtype="float32")
    samples = load_samples("assets/calib/tiny_t2v", "t2v")[:2]
    params = GenParams(32, 32, 5, 5.0, 6, 0, max_sequence_length=16)
    data = capture_block_inputs(pipe, samples, params, sample_steps=4, selection=selection, progress=False)
    assert len(data) == 8  # 2 prompts x 4 calls
    steps = [m["step"] for m in data.meta[:4]]
    assert steps == ([0, 0, 1, 1] if selection == "first" else [0, 0, 5, 5])
    assert [m["branch"] for m in data.meta[:4]] == ["cond", "uncond"] * 2
    # within a cond/uncond pair only the text context differs
    assert torch.equal(data.hidden_states[0], data.hidden_states[1])
    assert torch.equal(data.block_kwargs[0]["temb"], data.block_kwargs[1]["temb"])
    assert not torch.equal(data.block_kwargs[0]["encoder_hidden_states"], data.block_kwargs[1]["encoder_hidden_states"])
    assert all(h.device.type == "cpu" for h in data.hidden_states)
    assert data.meta[0]["timestep"] > data.meta[2]["timestep"]


def test_capture_does_not_swallow_pipeline_errors(tiny_t2v_dir):
    pipe = load_pipeline(tiny_t2v_dir, dtype="float32")
    samples = load_samples("assets/calib/tiny_t2v", "t2v")[:1]
    bad = GenParams(30, 30, 5, 5.0, 4, 0, max_sequence_length=16)  # height not divisible by 16
    with pytest.raises(ValueError, match="divisible"):
        capture_block_inputs(pipe, samples, bad, sample_steps=2, progress=False)
