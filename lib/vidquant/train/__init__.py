"""Training of the tiny Wan models used as quantization subjects (``vidquant train-tiny``).

Threads: ``vidquant``'s import applies the thread policy (vidquant.threads; on a small shared CPU, OpenMP's
spin-waiting made a VAE step 10-15x slower: 15 s instead of 1.2 s per step at 2 threads).
"""

from __future__ import annotations

import sys

_LAZY = ("TrainConfig", "train_tiny", "train_tiny_main")
__all__ = [*_LAZY, "main"]


def main(argv: list[str] | None = None) -> int:
    """``vidquant train-tiny ...``: the tiny Wan2.1 T2V / I2V pair (:mod:`vidquant.train.tiny`); with ``--wan22``,
    the tiny Wan2.2 pipelines derived from its T2V (:mod:`vidquant.train.wan22`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--wan22" in argv:
        from vidquant.train.wan22 import train_wan22_main

        return train_wan22_main([a for a in argv if a != "--wan22"])
    from vidquant.train.tiny import train_tiny_main

    return train_tiny_main(argv)


def __getattr__(name: str):
    # Lazy, so that `python -m vidquant.train.tiny` does not import the module twice.
    if name in _LAZY:
        from vidquant.train import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'vidquant.train' has no attribute {name!r}")
