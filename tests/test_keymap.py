"""Key mapping between the original Wan / lightx2v layout and diffusers (lightx2v_reference §1.3, §9).

Also home of the synthetic Wan checkpoint builders used by test_converter.py and test_verify.py.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidquant.export import keymap
from vidquant.export.keymap import detect_layout, rename_state_dict, to_diffusers, to_wan


@pytest.fixture(autouse=True)
def _rules_rebuilt_from_their_builders():
    """Rebuild the rule tables inside each test. They are built once at import by ``_top`` / ``_block``, and
    mutation testing (`make mutation`) switches a mutant on only after the modules are imported: without the
    rebuild no test could judge the builders. The functions imported above read the rebuilt tables (a reload
    re-executes the module in the same namespace)."""
    importlib.reload(keymap)

# ----------------------------------------------------------------------------------------------- builders


def wan_shapes(blocks: int = 2, dim: int = 32, ffn: int = 64, i2v: bool = False) -> dict[str, tuple]:
    """Every tensor of a small Wan2.1 DiT in the original Wan layout (reference §5.2), with its shape."""
    text, freq, img, in_ch = 24, 16, 20, (36 if i2v else 16)
    shapes: dict[str, tuple] = {
        "patch_embedding.weight": (dim, in_ch, 1, 2, 2),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (64, dim),
        "head.head.bias": (64,),
        "head.modulation": (1, 2, dim),
    }
    if i2v:
        shapes |= {
            "img_emb.proj.0.weight": (img,),
            "img_emb.proj.0.bias": (img,),
            "img_emb.proj.1.weight": (img, img),
            "img_emb.proj.1.bias": (img,),
            "img_emb.proj.3.weight": (dim, img),
            "img_emb.proj.3.bias": (dim,),
            "img_emb.proj.4.weight": (dim,),
            "img_emb.proj.4.bias": (dim,),
        }
    for n in range(blocks):
        b = f"blocks.{n}."
        shapes[b + "modulation"] = (1, 6, dim)
        for lin in keymap.block_linears("wan", i2v):
            out, inp = {"ffn.0": (ffn, dim), "ffn.2": (dim, ffn)}.get(lin, (dim, dim))
            shapes[b + lin + ".weight"] = (out, inp)
            shapes[b + lin + ".bias"] = (out,)
        norms = ["self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k"]
        norms += ["cross_attn.norm_k_img"] if i2v else []
        for norm in norms:
            shapes[b + norm + ".weight"] = (dim,)
        shapes[b + "norm3.weight"] = (dim,)
        shapes[b + "norm3.bias"] = (dim,)
    return shapes


def wan_state_dict(seed: int = 0, dtype: torch.dtype = torch.float32, **kw) -> dict[str, torch.Tensor]:
    """Random float tensors with the real Wan key names and consistent shapes."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) * 0.1).to(dtype) for k, s in wan_shapes(**kw).items()}


def quantize_linears(sd: dict[str, torch.Tensor], scale_dtype=torch.bfloat16, affine: bool = True) -> dict:
    """An LLMC-``save_lightx2v``-like version of a float state dict (any layout): int8 block linears,
    ``weight_scale`` (out, 1), plus affine_norm1/3 smoothing vectors. Independent of the converter."""
    layout = detect_layout(sd)
    out = dict(sd)
    blocks = sorted({keymap.block_index(k) for k in sd} - {None})
    for n in blocks:
        for lin in keymap.block_linears(layout, keymap.is_i2v(sd)):
            key = f"blocks.{n}.{lin}.weight"
            w = sd[key].float()
            scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-5) / 127
            out[key] = torch.round(w / scale).clamp(-128, 127).to(torch.int8)
            out[key + "_scale"] = scale.to(scale_dtype)
        if affine:
            dim = sd[f"blocks.{n}.{keymap.block_linears(layout, False)[0]}.weight"].shape[1]
            for norm in ("affine_norm1", "affine_norm3"):
                out[f"blocks.{n}.{norm}.weight"] = torch.full((dim,), 0.5)
                out[f"blocks.{n}.{norm}.bias"] = torch.full((dim,), 0.5)
    return out


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN-safe, works for fp8)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


# ----------------------------------------------------------------------------------------------- rules

# Hand-written from the reference table (§1.3), not derived from the rules under test.
EXPECTED = {
    "head.head.weight": "proj_out.weight",
    "head.head.bias": "proj_out.bias",
    "head.modulation": "scale_shift_table",
    "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
    "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
    "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
    "time_embedding.2.weight": "condition_embedder.time_embedder.linear_2.weight",
    "time_projection.1.bias": "condition_embedder.time_proj.bias",
    "patch_embedding.weight": "patch_embedding.weight",
    "blocks.0.self_attn.q.weight": "blocks.0.attn1.to_q.weight",
    "blocks.0.self_attn.k.bias": "blocks.0.attn1.to_k.bias",
    "blocks.1.self_attn.v.weight_scale": "blocks.1.attn1.to_v.weight_scale",
    "blocks.1.self_attn.o.weight": "blocks.1.attn1.to_out.0.weight",
    "blocks.12.cross_attn.q.weight": "blocks.12.attn2.to_q.weight",
    "blocks.0.cross_attn.k.weight": "blocks.0.attn2.to_k.weight",
    "blocks.0.cross_attn.v.weight_scale": "blocks.0.attn2.to_v.weight_scale",
    "blocks.0.cross_attn.o.bias": "blocks.0.attn2.to_out.0.bias",
    "blocks.0.norm3.weight": "blocks.0.norm2.weight",
    "blocks.0.ffn.0.weight": "blocks.0.ffn.net.0.proj.weight",
    "blocks.39.ffn.2.weight_scale": "blocks.39.ffn.net.2.weight_scale",
    "blocks.7.modulation": "blocks.7.scale_shift_table",
    "blocks.0.cross_attn.k_img.weight": "blocks.0.attn2.add_k_proj.weight",
    "blocks.0.cross_attn.v_img.weight_scale": "blocks.0.attn2.add_v_proj.weight_scale",
    "blocks.0.cross_attn.norm_k_img.weight": "blocks.0.attn2.norm_added_k.weight",
    "img_emb.proj.0.weight": "condition_embedder.image_embedder.norm1.weight",
    "img_emb.proj.1.weight": "condition_embedder.image_embedder.ff.net.0.proj.weight",
    "img_emb.proj.3.bias": "condition_embedder.image_embedder.ff.net.2.bias",
    "img_emb.proj.4.weight": "condition_embedder.image_embedder.norm2.weight",
    "blocks.0.self_attn.norm_q.weight": "blocks.0.attn1.norm_q.weight",
    "blocks.0.self_attn.norm_k.weight": "blocks.0.attn1.norm_k.weight",
    "blocks.0.cross_attn.norm_q.weight": "blocks.0.attn2.norm_q.weight",
    "blocks.0.cross_attn.norm_k.weight": "blocks.0.attn2.norm_k.weight",
    "blocks.3.affine_norm1.weight": "blocks.3.affine_norm1.weight",
    "blocks.3.affine_norm3.bias": "blocks.3.affine_norm3.bias",
    "model.diffusion_model.blocks.2.self_attn.q.weight_scale": (
        "model.diffusion_model.blocks.2.attn1.to_q.weight_scale"
    ),
}


@pytest.mark.parametrize(("wan", "diffusers"), EXPECTED.items())
def test_each_rule_both_directions(wan, diffusers):
    assert to_diffusers(wan) == diffusers
    assert to_wan(diffusers) == wan


def test_block_modulation_is_renamed_forward_and_kept_apart_from_head():
    # Upstream's forward rule wants "blocks.N.modulation." and never fires on the real key.
    assert to_diffusers("blocks.5.modulation") == "blocks.5.scale_shift_table"
    assert to_diffusers("head.modulation") == "scale_shift_table"
    assert to_wan("scale_shift_table") == "head.modulation"
    assert to_wan("blocks.5.scale_shift_table") == "blocks.5.modulation"


def test_affine_norms_are_never_renamed():
    for key in ("blocks.0.affine_norm1.weight", "blocks.0.affine_norm1.bias", "blocks.9.affine_norm3.weight"):
        assert to_wan(key) == key
        assert to_diffusers(key) == key


def test_block_rule_needs_a_component_boundary():
    assert to_diffusers("foo_blocks.0.self_attn.q.weight") == "foo_blocks.0.self_attn.q.weight"
    assert to_diffusers("blocks.0.self_attn.qq.weight") == "blocks.0.self_attn.qq.weight"


@pytest.mark.parametrize("i2v", [False, True])
def test_round_trip_full_key_set(i2v):
    wan_keys = list(quantize_linears(wan_state_dict(blocks=3, i2v=i2v)))
    assert any(k.endswith("weight_scale") for k in wan_keys)
    assert any("affine_norm" in k for k in wan_keys)
    diffusers_keys = [to_diffusers(k) for k in wan_keys]
    assert len(set(diffusers_keys)) == len(wan_keys)
    assert [to_wan(k) for k in diffusers_keys] == wan_keys
    assert detect_layout(wan_keys) == "wan"
    assert detect_layout(diffusers_keys) == "diffusers"
    # No Wan-only name survives forward conversion (block modulation included).
    assert not [k for k in diffusers_keys if k.endswith("modulation") or "self_attn" in k or ".norm3." in k]


def test_rename_state_dict_rejects_collisions():
    with pytest.raises(ValueError, match="keys 'blocks.0.norm2.weight' and 'blocks.0.norm3.weight' both map to"):
        rename_state_dict({"blocks.0.norm2.weight": 1, "blocks.0.norm3.weight": 2}, "backward")


def test_layout_helpers():
    assert len(keymap.block_linears("wan", False)) == 10
    assert len(keymap.block_linears("diffusers", True)) == 12
    assert keymap.is_i2v(wan_state_dict(i2v=True)) and not keymap.is_i2v(wan_state_dict())
    assert keymap.is_i2v(rename_state_dict(wan_state_dict(i2v=True), "forward"))  # diffusers names too
    assert not keymap.is_i2v(rename_state_dict(wan_state_dict(), "forward"))
    assert keymap.block_index("model.blocks.12.ffn.0.weight") == 12
    assert keymap.block_index("head.head.weight") is None
    assert detect_layout(["patch_embedding.weight"]) == "unknown"
    assert detect_layout(["blocks.0.self_attn.q.weight", "blocks.0.attn1.to_k.weight"]) == "mixed"


# ----------------------------------------------------------------------------------------------- property

_ALL_WAN_KEYS = sorted(quantize_linears(wan_state_dict(blocks=2, i2v=True), scale_dtype=torch.float32))
_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.float8_e4m3fn]


@st.composite
def wan_layout_state_dicts(draw):
    keys = draw(st.lists(st.sampled_from(_ALL_WAN_KEYS), min_size=1, max_size=25, unique=True))
    sd = {}
    for key in keys:
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
        dtype = draw(st.sampled_from(_DTYPES))
        seed = draw(st.integers(0, 2**16))
        sd[key] = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 50).to(dtype)
    return sd


@settings(max_examples=60, deadline=None)
@given(wan_layout_state_dicts())
def test_property_forward_then_backward_restores_keys_and_bytes(sd):
    back = rename_state_dict(rename_state_dict(sd, "forward"), "backward")
    assert list(back) == list(sd)
    assert all(same_bytes(back[k], sd[k]) for k in sd)
