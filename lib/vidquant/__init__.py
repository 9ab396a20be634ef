"""vidquant: post-training quantization of Wan2.1 video diffusion transformers, LLMC -> lightx2v compatible."""

from vidquant.threads import apply_thread_policy

__version__ = "0.1.0"

apply_thread_policy()  # before anything imports torch: see vidquant.threads
