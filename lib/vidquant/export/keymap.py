"""Key names of the Wan2.1 DiT in the original Wan / lightx2v layout and the diffusers layout.

The rule list mirrors lightx2v's converter (``tools/convert/converter.py``): one ordered list of
rules, each with a forward (Wan -> diffusers) and a backward (diffusers -> Wan) regex. Every rule of
the chosen direction is applied to a key in order, as chained substitutions (not first-match), so
the rules are written such that no rule's output is matched by a later rule.

Differences from upstream, on purpose:

* ``blocks.N.modulation`` is renamed forward as well (upstream's forward regex wants a trailing dot
  the real key never has, so forward conversion left it untouched).
* Block rules match ``blocks.N.`` only at the start of the key or after a dot: a prefix such as
  ``model.diffusion_model.`` survives, but ``foo_blocks.N.`` is not mistaken for a block.
* Every rule ends at a component boundary (next char is a dot or the end of the key), so a bare
  module name (``blocks.0.self_attn.q``, as a LoRA uses) maps too, and suffixes such as
  ``.weight_scale`` are carried.

``affine_norm1`` / ``affine_norm3`` (LLMC's smoothing vectors) match no rule and keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

__all__ = [
    "RULES",
    "Rule",
    "WAN_BLOCK_LINEARS",
    "WAN_I2V_BLOCK_LINEARS",
    "block_index",
    "block_linears",
    "convert_key",
    "detect_layout",
    "is_i2v",
    "rename_state_dict",
    "to_diffusers",
    "to_wan",
]

Direction = Literal["forward", "backward"]
Layout = Literal["wan", "diffusers", "mixed", "unknown"]
T = TypeVar("T")

# `blocks.N.` at the start of the key or after a dot; group 1 is N.
_BLOCK = r"(?:^|(?<=\.))blocks\.(\d+)\."
# The matched name must end a dotted component.
_END = r"(?=\.|$)"


@dataclass(frozen=True)
class Rule:
    """One rename rule: ``(pattern, replacement)`` for each direction."""

    forward: tuple[str, str]
    backward: tuple[str, str]


def _top(wan: str, diffusers: str) -> Rule:
    """A rule for a top-level (non-block) module, anchored at the start of the key like upstream."""
    return Rule(
        forward=("^" + re.escape(wan) + _END, diffusers),
        backward=("^" + re.escape(diffusers) + _END, wan),
    )


def _block(wan: str, diffusers: str) -> Rule:
    """A rule for a module inside ``blocks.N``; unanchored so that key prefixes survive."""
    return Rule(
        forward=(_BLOCK + re.escape(wan) + _END, r"blocks.\1." + diffusers),
        backward=(_BLOCK + re.escape(diffusers) + _END, r"blocks.\1." + wan),
    )


# Upstream's order. Upstream has two head.head rules (exact key, then `head.head.` prefix); one rule
# with the component-boundary lookahead covers both.
RULES: tuple[Rule, ...] = (
    _top("head.head", "proj_out"),
    _top("head.modulation", "scale_shift_table"),  # top level only; blocks.N.* is a separate rule
    _top("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    _top("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    _top("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    _top("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    _top("time_projection.1", "condition_embedder.time_proj"),
    _block("self_attn.q", "attn1.to_q"),
    _block("self_attn.k", "attn1.to_k"),
    _block("self_attn.v", "attn1.to_v"),
    _block("self_attn.o", "attn1.to_out.0"),
    _block("cross_attn.q", "attn2.to_q"),
    _block("cross_attn.k", "attn2.to_k"),
    _block("cross_attn.v", "attn2.to_v"),
    _block("cross_attn.o", "attn2.to_out.0"),
    # Wan's affine cross-attention LayerNorm is `norm3`, diffusers calls it `norm2`. The other two
    # norms have no parameters, hence no rule.
    _block("norm3", "norm2"),
    _block("ffn.0", "ffn.net.0.proj"),
    _block("ffn.2", "ffn.net.2"),
    _block("modulation", "scale_shift_table"),  # fixed: upstream's forward rule never matched
    _block("cross_attn.k_img", "attn2.add_k_proj"),
    _block("cross_attn.v_img", "attn2.add_v_proj"),
    _block("cross_attn.norm_k_img", "attn2.norm_added_k"),
    _top("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    _top("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    _top("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    _top("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    _block("self_attn.norm_q", "attn1.norm_q"),
    _block("self_attn.norm_k", "attn1.norm_k"),
    _block("cross_attn.norm_q", "attn2.norm_q"),
    _block("cross_attn.norm_k", "attn2.norm_k"),
)

_COMPILED: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    direction: tuple((re.compile(getattr(r, direction)[0]), getattr(r, direction)[1]) for r in RULES)
    for direction in ("forward", "backward")
}


def convert_key(key: str, direction: Direction) -> str:
    """Apply every rule of ``direction`` to ``key`` in order (chained substitutions)."""
    if direction not in _COMPILED:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    for pattern, replacement in _COMPILED[direction]:
        key = pattern.sub(replacement, key)
    return key


def to_wan(key: str) -> str:
    """Diffusers name -> original Wan / lightx2v name (the converter's ``backward``)."""
    return convert_key(key, "backward")


def to_diffusers(key: str) -> str:
    """Original Wan / lightx2v name -> diffusers name (the converter's ``forward``)."""
    return convert_key(key, "forward")


def rename_state_dict(state_dict: Mapping[str, T], direction: Direction) -> dict[str, T]:
    """Rename every key, keeping order. Two keys landing on one name is an error, not an overwrite."""
    out: dict[str, T] = {}
    source_of: dict[str, str] = {}
    for key, value in state_dict.items():
        new = convert_key(key, direction)
        if new in out:
            raise ValueError(f"keys {source_of[new]!r} and {key!r} both map to {new!r} ({direction})")
        out[new] = value
        source_of[new] = key
    return out


def detect_layout(keys: Iterable[str]) -> Layout:
    """Which naming ``keys`` use: a key the backward rules change is diffusers-named, one the
    forward rules change is Wan-named; keys neither changes (patch_embedding, affine_norm*) are neutral."""
    keys = list(keys)
    n_diffusers = sum(to_wan(k) != k for k in keys)
    n_wan = sum(to_diffusers(k) != k for k in keys)
    if n_diffusers and n_wan:
        return "mixed"
    if n_diffusers:
        return "diffusers"
    return "wan" if n_wan else "unknown"


_BLOCK_INDEX = re.compile(_BLOCK)


def block_index(key: str) -> int | None:
    """N for a key inside ``blocks.N``, else None (the first ``blocks.N.`` match counts)."""
    m = _BLOCK_INDEX.search(key)
    return int(m.group(1)) if m else None


def is_i2v(keys: Iterable[str]) -> bool:
    """I2V checkpoints have the image cross-attention projections (k_img / add_k_proj)."""
    return any(".cross_attn.k_img." in k or ".attn2.add_k_proj." in k for k in keys)


# The quantized linears of one block, Wan names (10 for T2V, 12 for I2V).
WAN_BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)
WAN_I2V_BLOCK_LINEARS: tuple[str, ...] = WAN_BLOCK_LINEARS + ("cross_attn.k_img", "cross_attn.v_img")


def block_linears(layout: Literal["wan", "diffusers"], i2v: bool) -> tuple[str, ...]:
    """Names (relative to ``blocks.N.``) of the quantized linears of one block in ``layout``."""
    names = WAN_I2V_BLOCK_LINEARS if i2v else WAN_BLOCK_LINEARS
    if layout == "wan":
        return names
    if layout == "diffusers":
        return tuple(to_diffusers(f"blocks.0.{n}").removeprefix("blocks.0.") for n in names)
    raise ValueError(f"layout must be 'wan' or 'diffusers', got {layout!r}")
