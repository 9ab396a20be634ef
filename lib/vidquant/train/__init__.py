"""Training of the tiny Wan models used as quantization subjects (``vidquant train-tiny``).

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (effective only if torch is
not imported yet): on a small shared CPU, OpenMP's default spin-waiting made a VAE step 10-15× slower as soon
as another process competed for the cores (measured: 15 s instead of 1.2 s per step at 2 threads).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["TrainConfig", "train_tiny", "train_tiny_main"]


def __getattr__(name: str):
    # Lazy, so that `python -m vidquant.train.tiny` does not import the module twice.
    if name in __all__:
        from vidquant.train import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'vidquant.train' has no attribute {name!r}")
