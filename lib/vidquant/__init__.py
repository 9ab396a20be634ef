"""vidquant: post-training quantization of Wan2.1 video diffusion transformers, LLMC -> lightx2v compatible."""

__version__ = "0.1.0"
