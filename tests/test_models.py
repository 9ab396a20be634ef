"""Loading Wan pipelines from disk (the same code path as a real checkpoint), the block layout, the fold block."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vidquant.calib.samples import Sample
from vidquant.generate import GenParams, generate_video
from vidquant.models import SUBSETS, ModelLoadError, block_linear_names, inspect_checkpoint, load_pipeline
from vidquant.models.block import SmoothableWanBlock, make_transformer_smoothable
from vidquant.quant import FakeQuantLinear

PARAMS = GenParams(height=32, width=32, num_frames=5, guidance_scale=5.0, num_inference_steps=2, seed=0)


def test_load_both_tiny_pipelines_with_dtype_policy(tiny_dirs):
    for task, path in tiny_dirs.items():
        pipe = load_pipeline(path, "WanI2V" if task == "i2v" else "WanT2V", "torch.bfloat16")
        assert type(pipe).__name__ == ("WanImageToVideoPipeline" if task == "i2v" else "WanPipeline")
        tr = pipe.transformer
        assert tr.dtype == torch.bfloat16
        # diffusers keeps norms, modulation tables and the time embedder in fp32
        assert tr.blocks[0].scale_shift_table.dtype == torch.float32
        assert tr.blocks[0].norm2.weight.dtype == torch.float32
        assert pipe.vae.dtype == torch.float32
        if task == "i2v":
            assert pipe.image_encoder.dtype == torch.float32


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_two_step_generation_shape(tiny_dirs, task, tmp_path):
    pipe = load_pipeline(tiny_dirs[task], dtype="float32")
    image = None
    if task == "i2v":
        image = tmp_path / "im.png"
        Image.new("RGB", (48, 32), (200, 30, 30)).save(image)
    params = PARAMS if task == "t2v" else GenParams(32, 48, 5, 5.0, 2, 0, max_sequence_length=512)
    clip = generate_video(pipe, Sample("a red square moving left", "", image), params)
    h, w = (32, 32) if task == "t2v" else (32, 48)  # I2V follows the image's aspect ratio
    assert clip.shape == (5, h, w, 3) and clip.dtype == np.float32
    assert np.isfinite(clip).all() and clip.min() >= 0 and clip.max() <= 1
    again = generate_video(pipe, Sample("a red square moving left", "", image), params)
    assert np.array_equal(clip, again), "same seed must give the same clip"


def test_block_layout(tiny_dirs):
    for task, n in (("t2v", 10), ("i2v", 12)):
        pipe = load_pipeline(tiny_dirs[task], dtype="float32")
        names = block_linear_names(pipe.transformer.blocks[0])
        assert len(names) == n
        assert ("attn2.add_k_proj" in names) == (task == "i2v")
    block = pipe.transformer.blocks[0]
    block.ffn.net[2] = FakeQuantLinear(block.ffn.net[2].weight.detach(), None)
    assert block_linear_names(block) == names, "a deployed (replaced) linear still counts"
    block.ffn.net[2] = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"no linear layer\(s\) \['ffn.net.2'\]"):
        block_linear_names(block)
    assert [s.prev_op for s in SUBSETS] == ["affine_norm1", "norm2", "affine_norm3"]
    assert [s.layers for s in SUBSETS] == [("attn1.to_q", "attn1.to_k", "attn1.to_v"), ("attn2.to_q",),
                                           ("ffn.net.0.proj",)]


def test_smoothable_block_is_identical_with_unit_vectors(tiny_dirs):
    pipe = load_pipeline(tiny_dirs["t2v"], dtype="float32")
    clip = generate_video(pipe, Sample("a red square"), PARAMS)
    make_transformer_smoothable(pipe.transformer)
    assert all(isinstance(b, SmoothableWanBlock) for b in pipe.transformer.blocks)
    keys = pipe.transformer.state_dict().keys()
    assert "blocks.0.affine_norm1.weight" in keys and "blocks.0.affine_norm3.bias" in keys
    # exactly the same arithmetic as diffusers when w = b = 1 (multiplying by 1.0 is exact)
    assert np.array_equal(clip, generate_video(pipe, Sample("a red square"), PARAMS))


def test_missing_directory_and_component(tiny_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_pipeline(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["i2v"], broken)
    shutil.rmtree(broken / "image_encoder")
    with pytest.raises(ModelLoadError, match="image_encoder: component folder missing"):
        inspect_checkpoint(broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        inspect_checkpoint(broken)


def test_task_mismatch_names_both(tiny_dirs):
    with pytest.raises(ModelLoadError, match="model.type is WanT2V but .* is a I2V checkpoint.*WanI2V"):
        load_pipeline(tiny_dirs["i2v"], "WanT2V")
    with pytest.raises(ModelLoadError, match="model.type is WanI2V but .* is a T2V checkpoint"):
        load_pipeline(tiny_dirs["t2v"], "WanI2V")
    info = inspect_checkpoint(tiny_dirs["t2v"])
    assert info.task == "t2v" and json.loads((info.path / "model_index.json").read_text())
