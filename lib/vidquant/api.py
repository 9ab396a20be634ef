"""The public API: one verb and plain dataclasses, in the spirit of torchao's `quantize_(model, config)`.

    import vidquant as vq

    pipe = vq.load_pipeline("assets/models/tiny-wan-t2v", torch_dtype="float32")
    recipe = vq.Recipe(methods=[vq.SmoothQuant(alpha=0.75), vq.GPTQ()], weight="int8", act="int8")
    calib = vq.Calib("assets/calib/tiny_t2v", sample_steps=8, height=64, width=64, num_frames=9,
                     num_inference_steps=20, max_sequence_length=16)
    result = vq.quantize_(pipe, recipe, calib=calib, export_dir="out")   # pipe is now fake-quantized

A `Recipe` is exactly an LLMC `quant.video_gen` section (`Recipe.from_config` / `to_config`, `from_yaml` /
`to_yaml`), so a recipe written in Python and the same recipe read from an LLMC YAML file quantize to the
same bytes. Each method's options are a typed dataclass beside its maths (`vidquant.algos.<method>`). The
calibration capture and the float reference clips are cached by content (`vidquant.cache`): a second
recipe on the same model and samples captures nothing again.

`quantize_` is the in-memory engine of `vidquant quantize` (`vidquant.run`): capture → blockwise PTQ →
optional lightx2v export from the calibrated float weights → fake-quant deployment, in place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from vidquant.algos.awq import AwqConfig
from vidquant.algos.base import METHOD_CONFIGS, MethodConfig
from vidquant.algos.deploy import deploy_fake_quant
from vidquant.algos.engine import BlockwiseResult, build_algorithms, run_blockwise
from vidquant.algos.gptq import GPTQConfig
from vidquant.algos.rtn import RTNConfig
from vidquant.algos.smoothquant import SmoothQuantConfig
from vidquant.cache import Cache, cached_capture, cached_clips
from vidquant.calib.capture import CalibData
from vidquant.calib.samples import Sample, load_samples
from vidquant.config import Config, ConfigError, QuantSpec, VideoGenQuant, load_config
from vidquant.export.lightx2v_export import EXPORT_DIRNAME, check_lightx2v_exportable, export_lightx2v
from vidquant.generate import GenParams
from vidquant.quant import build_quantizer
from vidquant.quant.blockfmt import static_input_scheme
from vidquant.run import _check_output

__all__ = ["Recipe", "Calib", "QuantizeResult", "quantize_", "capture", "reference_clips", "quant_spec",
           "SmoothQuant", "GPTQ", "Awq", "AWQ", "RTN", "MethodConfig"]

# The public names of the method configs: vq.SmoothQuant(alpha=0.75), vq.GPTQ(), vq.Awq(), vq.RTN().
SmoothQuant, GPTQ, Awq, RTN = SmoothQuantConfig, GPTQConfig, AwqConfig, RTNConfig
AWQ = Awq

_LABEL = re.compile(r"(?P<sign>u?)int(?P<bit>[2-8])(?:g(?P<group>\d+))?")


def quant_spec(spec: QuantSpec | str | dict, role: str) -> QuantSpec:
    """A tensor's quantizer from a QuantSpec, an LLMC `weight:` / `act:` dict, or a short label: 'int8',
    'uint4', 'int4g64' (per_group), 'e4m3', 'e5m2'. Labels quantize weights per output channel and
    activations per token, as lightx2v does."""
    if isinstance(spec, QuantSpec):
        return spec
    where = f"Recipe.{role}"
    if isinstance(spec, str):
        per = "per_channel" if role == "weight" else "per_token"
        m = _LABEL.fullmatch(spec)
        if spec in ("e4m3", "e5m2"):
            spec = {"quant_type": "float-quant", "bit": spec, "granularity": per}
        elif m:
            group = m.group("group")
            spec = {"bit": int(m.group("bit")), "symmetric": not m.group("sign"),
                    "granularity": "per_group" if group else per, "group_size": int(group) if group else -1}
        else:
            raise ConfigError(f"{where}: got {spec!r}; allowed: 'int8', 'uint8', 'int4g64' (any 2..8 bits, "
                              "optional gN group size), 'e4m3', 'e5m2', a dict or a QuantSpec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: got {type(spec).__name__}; allowed: a label, a dict or a QuantSpec")
    try:
        return QuantSpec.model_validate(spec)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or role}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise ConfigError(f"{where}: {problems}") from None


@dataclass
class Recipe:
    """What to do to every block: a chain of methods (applied in order), and the weight and activation
    formats (`act=None`: weight-only). `quant_out`: feed each block the previous blocks' quantized outputs."""

    methods: list[MethodConfig] = field(default_factory=lambda: [RTNConfig()])
    weight: QuantSpec | str | dict = "int8"
    act: QuantSpec | str | dict | None = "int8"
    quant_out: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.methods, MethodConfig):
            self.methods = [self.methods]
        self.methods = list(self.methods)
        for i, m in enumerate(self.methods):
            if not isinstance(m, MethodConfig):
                raise ConfigError(f"Recipe.methods[{i}]: got {m!r}; allowed: vq.RTN(), vq.SmoothQuant(...), "
                                  "vq.Awq(...), vq.GPTQ(...)")
        self.weight = quant_spec(self.weight, "weight")
        self.act = None if self.act is None else quant_spec(self.act, "act")
        self.to_config()  # the LLMC section's own checks (granularities, method chain) apply to recipes too

    # --- LLMC YAML, both ways ------------------------------------------------------------------------------
    def special(self) -> dict[str, Any]:
        """The chain's options as one LLMC `special` dict (LLMC shares one dict across a chain)."""
        merged: dict[str, Any] = {}
        for m in self.methods:
            for key, value in m.to_special().items():
                if key in merged and merged[key] != value:
                    raise ConfigError(f"Recipe.methods: {m.name}.{key}={value!r} conflicts with another method's "
                                      f"{key}={merged[key]!r} (LLMC's `special` is one dict for the chain)")
                if value is not None:
                    merged[key] = value
        return merged

    def to_config(self) -> VideoGenQuant:
        """The LLMC `quant.video_gen` section (validated)."""
        names = [m.name for m in self.methods]
        raw = {"method": names[0] if len(names) == 1 else names, "weight": self.weight.model_dump(exclude_none=True),
               "special": self.special(), "quant_out": self.quant_out}
        if self.act is not None:
            raw["act"] = self.act.model_dump(exclude_none=True)
        try:
            return VideoGenQuant.model_validate(raw)
        except ValidationError as err:
            raise ConfigError("Recipe: " + "; ".join(e["msg"].removeprefix("Value error, ")
                                                     for e in err.errors())) from None

    @classmethod
    def from_config(cls, config: Config | VideoGenQuant) -> Recipe:
        """The recipe of an LLMC config (or of its `quant.video_gen` section)."""
        import vidquant.algos.engine  # noqa: F401 - registers every method's config

        vg = config.quant.video_gen if isinstance(config, Config) else config
        methods = [METHOD_CONFIGS[m].from_special(vg.special_for(m)) for m in vg.methods]
        return cls(methods=methods, weight=vg.weight, act=vg.act, quant_out=vg.quant_out)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
        """The recipe of an LLMC YAML file (validated as `vidquant quantize` validates it)."""
        return cls.from_config(load_config(path, overrides))

    def to_yaml(self) -> str:
        """`quant: video_gen: ...` as LLMC YAML text; `Recipe.from_config` of it gives this recipe back."""
        section = self.to_config().model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump({"quant": {"video_gen": section}}, sort_keys=False)

    @property
    def label(self) -> str:
        """e.g. 'SmoothQuant+GPTQ w=int8 a=int8'."""
        act = self.act.label if self.act is not None else "none"
        return f"{'+'.join(m.name for m in self.methods)} w={self.weight.label} a={act}"


@dataclass
class Calib:
    """Calibration data: a sample set (a folder with LLMC's samples.json, or samples) and how to run the
    pipeline on it. `sample_steps` transformer calls per prompt are captured (`selection`: 'uniform' over the
    trajectory, or LLMC's 'first')."""

    samples: str | os.PathLike | list[Sample]
    sample_steps: int = 8
    height: int = 480
    width: int = 832
    num_frames: int = 81
    guidance_scale: float = 5.0
    num_inference_steps: int = 50
    max_sequence_length: int = 512
    seed: int = 42
    selection: str = "uniform"

    def __post_init__(self) -> None:
        for key in ("sample_steps", "height", "width", "num_frames", "num_inference_steps", "max_sequence_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Calib.{key}: got {value!r}; allowed: an integer > 0")
        if self.selection not in ("uniform", "first"):
            raise ConfigError(f"Calib.selection: got {self.selection!r}; allowed: 'uniform', 'first'")

    @property
    def params(self) -> GenParams:
        return GenParams(self.height, self.width, self.num_frames, float(self.guidance_scale),
                         self.num_inference_steps, self.seed, self.max_sequence_length)

    def load(self, task: str) -> list[Sample]:
        """The samples, checked for the task ('t2v' / 'i2v')."""
        return list(self.samples) if isinstance(self.samples, list) else load_samples(self.samples, task)

    @classmethod
    def from_config(cls, cfg: Config) -> Calib:
        """The `calib:` section of an LLMC config (seeded by `base.seed`, as `vidquant quantize` runs it)."""
        if cfg.calib is None:
            raise ConfigError(f"{cfg.source or 'config'}: calib: missing")
        c = cfg.calib
        return cls(cfg.resolve_path(c.path), c.sample_steps, c.target_height, c.target_width, c.num_frames,
                   c.guidance_scale, c.num_inference_steps, c.max_sequence_length, cfg.base.seed, c.step_selection)


@dataclass
class QuantizeResult:
    """What `quantize_` decided and wrote."""

    recipe: Recipe
    blockwise: BlockwiseResult | None
    calib: CalibData | None
    wq: Any
    aq: Any
    export_dir: Path | None = None

    @property
    def layer_metrics(self):
        """Per-layer SQNR / relative error / cosine on the calibration inputs (a DataFrame)."""
        import pandas as pd

        return self.blockwise.layer_metrics if self.blockwise is not None else pd.DataFrame()

    @property
    def weight_qparams(self) -> dict:
        return self.blockwise.weight_qparams if self.blockwise is not None else {}


def _task(pipe) -> str:
    return "i2v" if getattr(pipe, "image_encoder", None) is not None else "t2v"


def capture(pipe, calib: Calib, *, progress: bool = True, cache: Cache | None = None) -> CalibData:
    """Block-0 inputs over the calibration samples (cached by pipeline weights, samples and settings)."""
    return cached_capture(pipe, calib.load(_task(pipe)), calib.params, calib.sample_steps, calib.selection,
                          progress, cache)


def reference_clips(pipe, samples: str | os.PathLike | list[Sample], params: GenParams | None = None, *,
                    seed: int = 42, progress: bool = True, cache: Cache | None = None) -> list[np.ndarray]:
    """One clip per sample, as `vidquant quantize` generates its float references (cached by content, so
    calling it again on the same float pipeline generates nothing)."""
    if not isinstance(samples, list):
        samples = load_samples(samples, _task(pipe))
    return cached_clips(pipe, samples, params or GenParams(seed=seed), [seed], cache, progress)[seed]


def quantize_(
    model,
    recipe: Recipe,
    calib: Calib | CalibData | None = None,
    *,
    export_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    scale_dtype: str = "float32",
    max_shard_size: str = "10GB",
    device: str | torch.device | None = None,
    progress: bool = True,
    cache: Cache | None = None,
) -> QuantizeResult:
    """Quantize a Wan pipeline (or its transformer) in place with `recipe`.

    `calib`: a `Calib` (needs a pipeline: its capture is cached), or an already captured `CalibData`; RTN
    needs none. `export_dir`: also write LLMC's lightx2v export (`<export_dir>/lightx2v_quant_model`), from
    the calibrated float weights, before the model is fake-quantized. `device`: where each block is
    calibrated (default: where the transformer is). Every argument is checked before any work.
    """
    transformer = getattr(model, "transformer", model)
    if not hasattr(transformer, "blocks"):
        raise TypeError(f"quantize_: expected a Wan pipeline or transformer (with .blocks), got {type(model).__name__}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"quantize_: expected a vq.Recipe, got {type(recipe).__name__}")
    vg = recipe.to_config()
    needs_data = {m.name for m in recipe.methods} - {"RTN"}
    if needs_data and calib is None:
        raise ConfigError(f"quantize_: {', '.join(sorted(needs_data))} needs calibration data (calib=vq.Calib(...))")
    if isinstance(calib, Calib) and transformer is model:
        raise ConfigError("quantize_: capturing calibration data needs the pipeline; pass the pipeline, or a "
                          "CalibData from vq.capture(pipe, calib)")
    if scale_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"quantize_: scale_dtype: got {scale_dtype!r}; allowed: 'float32', 'bfloat16'")
    if export_dir is not None:
        check_lightx2v_exportable(vg)
        _check_output(Path(export_dir) / EXPORT_DIRNAME, overwrite, "export_dir")  # before calibrating
    wq = build_quantizer(recipe.weight)
    aq = build_quantizer(recipe.act) if recipe.act is not None else None
    if static_input_scheme(aq) is not None and calib is None:
        raise ConfigError(f"quantize_: {static_input_scheme(aq)} activations use a static scale calibrated on data; "
                          "pass calib=vq.Calib(...) or a CalibData")
    device = torch.device(device) if device is not None else next(transformer.parameters()).device

    data = capture(model, calib, progress=progress, cache=cache) if isinstance(calib, Calib) else calib
    blockwise = None
    if data is not None:
        blockwise = run_blockwise(transformer, data, build_algorithms(recipe.methods), wq, aq, device,
                                  recipe.quant_out, progress)
    qparams = blockwise.weight_qparams if blockwise is not None else {}
    written = None
    if export_dir is not None:
        written = export_lightx2v(transformer, wq, export_dir, weight_qparams=qparams,
                                  scale_dtype=getattr(torch, scale_dtype), max_shard_size=max_shard_size,
                                  overwrite=overwrite)
    deploy_fake_quant(transformer, wq, aq, qparams, blockwise.input_absmax if blockwise is not None else None)
    return QuantizeResult(recipe, blockwise, data, wq, aq, written)

