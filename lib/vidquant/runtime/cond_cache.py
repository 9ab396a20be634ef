"""Reuse the cross-attention keys and values of the conditioning across denoising steps.

In every Wan block, cross-attention projects the text embeddings (and, for I2V, the CLIP image embeddings) with
``attn2.to_k`` / ``to_v`` (``add_k_proj`` / ``add_v_proj``). Those inputs depend only on the prompt and the image,
never on the latent or the timestep, so at every denoising step each block recomputes the same two (four)
products: for Wan2.1-1.3B, 512 text tokens × 1536² per projection, 30 blocks, twice per step with CFG.

:func:`cache_conditioning` makes those linears remember their last few (input, output) pairs and return the
stored output when called again with an input equal to a stored one (``torch.equal``: content, not identity,
because diffusers rebuilds the embedding tensors on every call). The comparison reads the input once, which is
1/K of the work of the product it saves. Returned outputs are bitwise the ones the layer computed, so results
are unchanged; an entry whose input or output was modified in place since is discarded. Only under
``torch.no_grad()`` (inference): with gradients enabled the layer computes as usual.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CONDITIONING_LINEARS", "cache_conditioning", "uncache_conditioning"]

#: The cross-attention projections whose input is the conditioning only (diffusers' WanAttention names).
CONDITIONING_LINEARS = ("to_k", "to_v", "add_k_proj", "add_v_proj")


class _Memoized:
    """Mixin placed in front of a module's own class: ``forward`` memoized on input equality."""

    _memo_size: int
    _memo: list[tuple[Tensor, int, Tensor, int]]  # (input, its version, output, its version), newest first

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        self._memo = [e for e in self._memo if e[0]._version == e[1] and e[2]._version == e[3]]
        for key, _, out, _ in self._memo:
            if key.shape == x.shape and key.dtype == x.dtype and key.device == x.device and torch.equal(key, x):
                return out
        out = super().forward(x)
        self._memo = [(x, x._version, out, out._version), *self._memo][: self._memo_size]
        return out


_MEMO_CLASSES: dict[type, type] = {}


def _memoized_class(cls: type) -> type:
    if cls not in _MEMO_CLASSES:
        _MEMO_CLASSES[cls] = type(f"Memoized{cls.__name__}", (_Memoized, cls), {"__module__": __name__})
    return _MEMO_CLASSES[cls]


def cache_conditioning(transformer: nn.Module, entries: int = 2) -> int:
    """Memoize every block's conditioning projections (:data:`CONDITIONING_LINEARS` of ``attn2``), in place.

    ``entries`` inputs are remembered per layer (2: the conditional and the unconditional branch of CFG). The
    modules keep their state_dict and stay instances of their class (their class becomes a memoizing subclass).
    Returns how many layers were changed.
    """
    if entries < 1:
        raise ValueError(f"entries must be >= 1, got {entries}")
    n = 0
    for block in getattr(transformer, "blocks", ()):
        attn = getattr(block, "attn2", None)
        for name in CONDITIONING_LINEARS:
            module = getattr(attn, name, None)
            if module is None:
                continue
            if not isinstance(module, _Memoized):
                module.__class__ = _memoized_class(type(module))
            module._memo_size, module._memo = entries, []
            n += 1
    return n


def uncache_conditioning(transformer: nn.Module) -> int:
    """Undo :func:`cache_conditioning` (frees the stored tensors); returns how many layers were restored."""
    n = 0
    for module in transformer.modules():
        if isinstance(module, _Memoized):
            module.__class__ = type(module).__mro__[2]  # (Memoized<cls>, _Memoized, cls, ...)
            del module._memo, module._memo_size
            n += 1
    return n
