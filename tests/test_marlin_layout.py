"""int4-g128-marlin: an unpacker written from the documented Marlin facts, element by element (not by inverting our
packer's reshapes and permutations), must recover the exact int4 codes and group scales from our exported
tensors. Facts (docs/formats.md §5.3.1, with sources):

* lightx2v's `MMWeightWint4group128Marlin` (lightx2v/common/ops/mm/mm_weight.py) loads `<P>.weight`,
  `<P>.weight_scale` and `<P>.weight_workspace` as stored (no transpose, no repacking) and calls
  `marlin_cuda_quant.mul(x, weight, out, weight_scale.half(), workspace, -1, -1, -1, -1)`; the output width is
  `weight_scale.shape[1]`. So the checkpoint must already be in Marlin's kernel layout, `Layer.pack`'s output.
* IST-DASLab/marlin `Layer`: B int32 (k/16, 2n) for the (k = in, n = out) weight, s float16 (k/128, n), workspace
  int32 n/128 * max_par (8) zeros. Codes are `round(w / s) + 8` clamped to 0..15, eight 4-bit codes per int32,
  the i-th code of a group of 8 in bits 4i..4i+3.
* Within each 16-row strip of k, the codes of 16x16 tiles are ordered for the tensor cores' mma.m16n8k16 B
  fragment (PTX ISA, "Matrix fragments for mma.m16n8k16"): lane = 4 * groupID + threadID_in_group with
  groupID = n % 8, threadID_in_group = (k % 8) // 2. Each lane holds, for 4 consecutive 16x16 tiles (64 columns
  of n), one int32 per tile; its 8 nibbles are the lane's (k, n), (k + 8, n), (k, n + 8), (k + 8, n + 8) for the
  even k first, then the same four for k + 1 (Marlin's `interleave = [0, 2, 4, 6, 1, 3, 5, 7]`, so one `lop3`
  yields two fp16 values).
* Group scales: within every 64 consecutive output columns, logical column c is stored at 8 * (c % 8) + c // 8
  (Marlin's `scale_perm`: position 8i + j holds column i + 8j).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidquant.export.formats import marlin_pack, pack_linear
from vidquant.export.io import load_state_dict
from vidquant.export.lightx2v_export import export_lightx2v
from vidquant.models.layout import block_linear_names
from vidquant.quant import IntQuantizer

ROOT = Path(__file__).resolve().parents[1]
GROUP = 128


def codes_from_marlin_facts(b: torch.Tensor) -> torch.Tensor:
    """int4 codes (out, in) in -8..7 from Marlin's int32 (in/16, 2·out), by the fragment formula for each (k, n)."""
    k_rows, words = b.shape
    k, n = k_rows * 16, words // 2
    kk = torch.arange(k).view(-1, 1)
    nn_ = torch.arange(n).view(1, -1)
    lane = 4 * (nn_ % 8) + (kk % 8) // 2  # groupID = n % 8, threadID_in_group = (k % 8) // 2
    tile = (nn_ // 16) % 4  # which of the lane's 4 consecutive 16x16 tiles
    word = (nn_ // 64) * 128 + 4 * lane + tile  # 1024 codes = 128 words per 64 columns of n
    nibble = 4 * (kk % 2) + 2 * ((nn_ % 16) // 8) + (kk % 16) // 8
    bits = b.to(torch.int64) & 0xFFFFFFFF  # the uint32 pattern
    u = (bits[kk // 16, word] >> (4 * nibble)) & 0xF
    return (u - 8).T.to(torch.int8)


def scales_from_marlin_facts(s: torch.Tensor) -> torch.Tensor:
    """Group scales (out, in/128) in fp32 from Marlin's permuted float16 (in/128, out)."""
    c = torch.arange(s.shape[1])
    stored = (c // 64) * 64 + 8 * (c % 8) + (c % 64) // 8
    return s[:, stored].float().T


def test_fragment_formula_on_hand_placed_codes():
    """One code at a time: each lands in the word and nibble the facts name (and nowhere else)."""
    for k, n in [(0, 0), (1, 0), (8, 0), (9, 8), (3, 5), (15, 15), (16, 17), (5, 70), (130, 255)]:
        codes = torch.full((256, 256), -8, dtype=torch.int8)  # stored as 0
        codes[n, k] = 7  # stored as 15
        b, _ = marlin_pack(codes, torch.ones(256, 2))
        lane = 4 * (n % 8) + (k % 8) // 2
        word = (n // 64) * 128 + 4 * lane + (n // 16) % 4
        nibble = 4 * (k % 2) + 2 * ((n % 16) // 8) + (k % 16) // 8
        expected = torch.zeros_like(b)
        expected[k // 16, word] = torch.tensor(15 << (4 * nibble), dtype=torch.int64).to(torch.int32)
        assert torch.equal(b, expected), (k, n)


def test_scale_permutation_on_hand_placed_scales():
    scale = torch.ones(256, 2)
    scale[70, 1] = 2.0  # out column 70 -> chunk 1, c % 64 = 6 -> stored at 64 + 8 * 6 + 0
    _, s = marlin_pack(torch.zeros(256, 256, dtype=torch.int8), scale)
    assert s.shape == (2, 256) and s.dtype == torch.float16
    assert s[1, 64 + 48].item() == 2.0 and int((s != 1).sum()) == 1


@pytest.mark.parametrize("shape", [(256, 128), (512, 384), (768, 1024)])
def test_independent_unpacker_recovers_codes_and_scales(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0])) * 0.05
    q = IntQuantizer(4, True, "per_group", GROUP).quantize(w)
    t = pack_linear("int4-g128-marlin", q)
    assert torch.equal(codes_from_marlin_facts(t["weight"]), q.codes.to(torch.int8))
    assert torch.equal(scales_from_marlin_facts(t["weight_scale"]), q.scale.reshape(shape[0], -1).half().float())
    assert t["weight_workspace"].dtype == torch.int32 and t["weight_workspace"].numel() == shape[0] // 128 * 8
    assert not t["weight_workspace"].any()


def test_exported_checkpoint_decodes_to_the_quantizers_codes(tmp_path):
    """Our whole export (every block linear of the tiny T2V model), read back from disk."""
    from diffusers import WanTransformer3DModel

    tr = WanTransformer3DModel.from_pretrained(ROOT / "assets/models/tiny-wan-t2v/transformer").eval()
    wq = IntQuantizer(4, True, "per_group", GROUP)
    weights = {f"blocks.{i}.{n}": b.get_submodule(n).weight.detach().clone()
               for i, b in enumerate(tr.blocks) for n in block_linear_names(b)}
    state = load_state_dict(export_lightx2v(tr, wq, tmp_path / "x", scheme="int4-g128-marlin"))
    for key, w in weights.items():
        q = wq.quantize(w)
        assert torch.equal(codes_from_marlin_facts(state[f"{key}.weight"]), q.codes.to(torch.int8)), key
        ref = q.scale.reshape(w.shape[0], -1).half().float()
        assert torch.equal(scales_from_marlin_facts(state[f"{key}.weight_scale"]), ref), key
        assert not state[f"{key}.weight_workspace"].any(), key
