"""Batched eval generation (vidquant.generate.generate_videos): the same clips as one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from vidquant.calib.samples import load_samples
from vidquant.eval.metrics import psnr
from vidquant.generate import GenParams, generate_video, generate_videos
from vidquant.models.loading import load_pipeline
from vidquant.quant import build_quantizer_from_dict
from vidquant.quant.blockfmt import NVFP4Quantizer
from vidquant.run import batch_independent

PARAMS = GenParams(32, 32, 5, 5.0, 4, 0, 16)


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_batches_give_each_clip_its_own_seed_and_prompt(tiny_dirs, task):
    pipe = load_pipeline(tiny_dirs[task], "WanI2V" if task == "i2v" else "WanT2V", "torch.float32", "cpu")
    samples = load_samples(f"assets/eval/tiny_{task}", task)[:2]
    seeds = (3, 4)
    single = {s: [generate_video(pipe, x, GenParams(**{**PARAMS.__dict__, "seed": s})) for x in samples]
              for s in seeds}
    one = generate_videos(pipe, samples, PARAMS, seeds, batch_size=1)
    batched = generate_videos(pipe, samples, PARAMS, seeds, batch_size=3)  # a full batch and a partial one
    for s in seeds:
        for i in range(len(samples)):
            assert np.array_equal(one[s][i], single[s][i])  # batch 1 is generate_video, bit for bit
            # the same clip up to the last bits of the batched GEMMs (a wrong seed or prompt: < 20 dB)
            assert psnr(batched[s][i], single[s][i]) > 60, (s, i)
    assert psnr(one[3][0], one[4][0]) < 40  # the seeds are different clips
    assert psnr(one[3][0], one[3][1]) < 40  # so are the prompts


def test_batch_independent_quantizers():
    assert batch_independent(None)
    assert batch_independent(build_quantizer_from_dict({"bit": 8, "granularity": "per_token"}))
    assert not batch_independent(build_quantizer_from_dict({"bit": 8, "granularity": "per_tensor"}))
    assert batch_independent(NVFP4Quantizer())  # deployed with its calibrated static global scale


def test_batch_size_must_be_positive(tiny_dirs):
    with pytest.raises(ValueError, match="batch_size"):
        generate_videos(None, [], PARAMS, [1], batch_size=0)
