"""Training of the tiny Wan models used as quantization subjects (``vidquant train-tiny``).

Threads: ``vidquant``'s import applies the thread policy (vidquant.threads; on a small shared CPU, OpenMP's
spin-waiting made a VAE step 10-15x slower: 15 s instead of 1.2 s per step at 2 threads).
"""

__all__ = ["TrainConfig", "train_tiny", "train_tiny_main"]


def __getattr__(name: str):
    # Lazy, so that `python -m vidquant.train.tiny` does not import the module twice.
    if name in __all__:
        from vidquant.train import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'vidquant.train' has no attribute {name!r}")
