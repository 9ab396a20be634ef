"""vidquant: post-training quantization of Wan2.1 video diffusion transformers, LLMC -> lightx2v compatible.

The public API (`import vidquant as vq`; see docs/api.md):

    vq.quantize_(pipe, vq.Recipe(methods=[vq.SmoothQuant(alpha=0.75), vq.GPTQ()]), calib=vq.Calib(...))

Its names load on first use, so `import vidquant` (and the CLI's config checks) never import torch.
"""

from vidquant.threads import apply_thread_policy

__version__ = "0.1.0"

apply_thread_policy()  # before anything imports torch: see vidquant.threads

# public name -> module that defines it (imported on first access: PEP 562)
_LAZY = {
    **{name: "vidquant.api" for name in ("Recipe", "Calib", "QuantizeResult", "quantize_", "capture",
                                         "reference_clips", "quant_spec", "SmoothQuant", "GPTQ", "Awq", "AWQ",
                                         "RTN", "MethodConfig")},
    "Cache": "vidquant.cache",
    "default_cache": "vidquant.cache",
    "load_pipeline": "vidquant.models.loading",
    "GenParams": "vidquant.generate",
    "Sample": "vidquant.calib.samples",
    "load_samples": "vidquant.calib.samples",
    "Config": "vidquant.config",
    "ConfigError": "vidquant.config",
    "QuantSpec": "vidquant.config",
    "load_config": "vidquant.config",
    "export_lightx2v": "vidquant.export.lightx2v_export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vidquant' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
