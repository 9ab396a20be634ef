"""Training of the tiny Wan models used as quantization subjects."""

from vidquant.train.tiny import TrainConfig, train_tiny, train_tiny_main

__all__ = ["TrainConfig", "train_tiny", "train_tiny_main"]
