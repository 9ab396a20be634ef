"""Typed LLMC video_gen configs: YAML in and out, validation with clear errors, `a.b.c=value` overrides.

LLMC's video_gen YAML files load as they are (llmc_reference §1). Every section is a pydantic model that
forbids unknown fields, so a typo fails with the dotted field name, the value and what is allowed, before
any model is loaded. Fields marked "ours" are vidquant extensions with LLMC-compatible defaults.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "Config",
    "QuantSpec",
    "load_config",
    "parse_config",
    "apply_overrides",
    "dump_config",
    "read_yaml",
    "parse_scalar",
    "METHODS",
    "SPECIAL_RULES",
    "MAX_SEED",
    "check_device",
]

log = logging.getLogger("vidquant")
MAX_SEED = 2**63 - 1  # torch.manual_seed's range (non-negative part)
SeedInt = Annotated[int, Field(ge=0, le=MAX_SEED)]
SIZE_MULTIPLE = 16  # Wan: VAE stride 8 x patch 2
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the dotted field and what is allowed."""


class _Section(BaseModel):
    # strict: a quoted 'false' is not a bool, '8' is not an int, true is not a float
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class _GenSection(_Section):
    """Checks shared by `calib` and `eval`: sizes the model can run, local data only."""

    @field_validator("download", check_fields=False)
    @classmethod
    def _no_download(cls, v: bool) -> bool:
        if v:
            raise ValueError("got True; allowed: False (vidquant never downloads; point `path` at a local folder)")
        return v

    @field_validator("target_height", "target_width", check_fields=False)
    @classmethod
    def _multiple(cls, v: int) -> int:
        if v % SIZE_MULTIPLE:
            raise ValueError(f"got {v}; allowed: multiples of {SIZE_MULTIPLE} (Wan's VAE stride 8 x patch 2)")
        return v

    @field_validator("num_frames", check_fields=False)
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"got {v}; allowed: 4k+1 frames (Wan's VAE packs 4 frames after the first)")
        return v


# --------------------------------------------------------------------------------------------------- base
class BaseSection(_Section):
    seed: SeedInt = 42


class ModelSection(_Section):
    type: Literal["WanT2V", "WanI2V", "Wan22T2V", "Wan22I2V", "Wan22TI2V"]  # models.MODEL_TYPES
    path: str
    # LLMC requires the key and ignores it for Wan (always bf16). We honour it: "auto" keeps LLMC's bf16.
    torch_dtype: str = "auto"
    lora_path: str | None = None
    tokenizer_mode: str | None = None
    use_cpu_to_save_cuda_mem_for_catcher: bool = False
    device: str = "auto"  # ours: "auto" = cuda if available else cpu
    # the multiplier of lora_path; LLMC's load_lora_weights(alpha=1.0) has it as a fixed argument, here a field
    lora_alpha: float = Field(1.0, allow_inf_nan=False)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_PATTERN.fullmatch(v):
            raise ValueError(f"got {v!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        return v

    @field_validator("torch_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        allowed = {"auto", "torch.bfloat16", "bfloat16", "torch.float32", "float32"}
        if v not in allowed:
            raise ValueError(f"got {v!r}; allowed: {sorted(allowed)}")
        return v


class CalibSection(_GenSection):
    name: Literal["t2v", "i2v"]
    download: bool = False
    path: str
    sample_steps: int = Field(gt=0)
    bs: Literal[1] = 1
    target_height: int = Field(480, gt=0)
    target_width: int = Field(832, gt=0)
    num_frames: int = Field(81, gt=0)
    guidance_scale: float = Field(5.0, ge=0, allow_inf_nan=False)
    seed: SeedInt = 42
    # Read by LLMC but ignored for video; accepted so LLMC files load.
    n_samples: int | None = None
    preproc: str | None = None
    padding: bool | None = None
    apply_chat_template: bool | None = None
    seq_len: int | None = None
    # ours
    num_inference_steps: int = Field(50, gt=0)
    max_sequence_length: int = Field(512, gt=0)
    step_selection: Literal["uniform", "first"] = "uniform"


EvalPos = Literal["pretrain", "transformed", "fake_quant", "fake_quant_wo_kv"]


class EvalSection(_GenSection):
    eval_pos: list[EvalPos] = ["fake_quant"]
    type: Literal["video_gen"] = "video_gen"
    name: Literal["t2v", "i2v"]
    download: bool = False
    path: str
    bs: int = Field(1, ge=1)  # clips per pipeline call (vidquant.generate.generate_videos)
    target_height: int = Field(480, gt=0)
    target_width: int = Field(832, gt=0)
    num_frames: int = Field(81, gt=0)
    guidance_scale: float = Field(5.0, ge=0, allow_inf_nan=False)
    output_video_path: str
    fps: int = Field(15, gt=0)
    seq_len: int | None = None
    num_samples: int | None = Field(None, gt=0)
    inference_per_block: bool | None = None
    # ours
    num_inference_steps: int = Field(50, gt=0)
    max_sequence_length: int = Field(512, gt=0)
    seeds: list[SeedInt] | None = None  # generation seeds of every eval clip (None: base.seed)
    noise_floor: bool = False  # also the float model's clips with a one-ulp nudge (vidquant.eval.noise)
    jitter: bool = False  # also the quantized model's nudged clips

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"got {v}; expected distinct seeds, at least one (or null: base.seed)")
        return v

    @field_validator("output_video_path")
    @classmethod
    def _video_folder(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("got ''; allowed: a folder path")
        if Path(v).suffix.lower() in VIDEO_SUFFIXES:
            raise ValueError(f"got {v!r}; allowed: a folder (the clips are written into it as "
                             "fake_quant_output_<i>.mp4, as LLMC), not a video file name")
        return v


class QuantSpec(_Section):
    """One tensor's quantizer (LLMC `quant.video_gen.weight` / `.act`)."""

    # ours: "mx-quant" (OCP MX: bit e4m3 / e5m2 / e2m3 / e3m2 / e2m1, per_block, block_size 32) and "nvfp4-quant"
    # (bit e2m1, per_block, block_size 16); see docs/formats.md
    quant_type: Literal["int-quant", "float-quant", "mx-quant", "nvfp4-quant"] = "int-quant"
    bit: int | str = 8
    symmetric: bool = True
    granularity: Literal["per_tensor", "per_channel", "per_group", "per_token", "per_head", "per_block"]
    group_size: int = -1
    use_qtorch: bool = False
    calib_algo: Literal["minmax"] = "minmax"
    static: bool = False
    round_zp: bool = True
    # accepted for LLMC compatibility, unused for Wan
    head_num: int | None = None
    block_size: int | None = None
    ste: bool | None = None
    tp: int | None = None

    @model_validator(mode="after")
    def _check(self) -> QuantSpec:
        if self.quant_type in BLOCK_QUANT_TYPES:
            return _check_block_spec(self)
        if self.quant_type == "int-quant":
            if not isinstance(self.bit, int) or not 2 <= self.bit <= 8:
                raise ValueError(f"bit: got {self.bit!r}; allowed for int-quant: integers 2..8 "
                                 "(float formats 'e4m3' / 'e5m2' need quant_type: float-quant)")
        else:
            if self.bit not in ("e4m3", "e5m2"):
                raise ValueError(f"bit: got {self.bit!r}; allowed for float-quant: 'e4m3', 'e5m2'")
            if not self.symmetric:
                raise ValueError("symmetric: got False; float-quant is always symmetric")
        if self.granularity in ("per_head", "per_block"):
            raise ValueError(
                f"granularity: got {self.granularity!r}; allowed for Wan: per_tensor, per_channel, "
                "per_group, per_token"
            )
        if self.granularity == "per_group" and self.group_size <= 0:
            raise ValueError(f"group_size: got {self.group_size}; per_group needs a positive group_size")
        if self.static and (self.quant_type, self.bit, self.granularity) != ("float-quant", "e4m3", "per_tensor"):
            raise ValueError("static: got True; only dynamic activation quantization is supported, except "
                             "float-quant e4m3 per_tensor activations (lightx2v's fp8-pertensor)")
        if not self.round_zp:
            raise ValueError("round_zp: got False; only LLMC's default (rounded zero points) is implemented")
        return self

    @property
    def label(self) -> str:
        """Short human name, e.g. 'int8', 'int4g64', 'e4m3', 'mx-e2m1', 'nvfp4'."""
        if self.quant_type in BLOCK_QUANT_TYPES:
            return "nvfp4" if self.quant_type == "nvfp4-quant" else f"mx-{self.bit}"
        if self.quant_type == "float-quant":
            return str(self.bit)
        g = f"g{self.group_size}" if self.granularity == "per_group" else ""
        return f"{'int' if self.symmetric else 'uint'}{self.bit}{g}"


BLOCK_QUANT_TYPES = {"mx-quant": (("e4m3", "e5m2", "e2m3", "e3m2", "e2m1"), 32), "nvfp4-quant": (("e2m1",), 16)}


def _check_block_spec(spec: QuantSpec) -> QuantSpec:
    """mx-quant / nvfp4-quant: element format in `bit`, granularity per_block, block_size fixed by the format."""
    bits, block = BLOCK_QUANT_TYPES[spec.quant_type]
    if spec.bit not in bits:
        raise ValueError(f"bit: got {spec.bit!r}; allowed for {spec.quant_type}: {', '.join(bits)}")
    if spec.granularity != "per_block":
        raise ValueError(f"granularity: got {spec.granularity!r}; {spec.quant_type} needs per_block")
    if spec.block_size is None:
        spec.__dict__["block_size"] = block  # a default, set without re-running validation
    if spec.block_size != block:
        raise ValueError(f"block_size: got {spec.block_size}; {spec.quant_type} uses blocks of {block}")
    if not spec.symmetric or spec.static:
        raise ValueError(f"symmetric/static: {spec.quant_type} is symmetric with dynamic block scales")
    return spec


# Each algorithm's `special` keys with LLMC's defaults; the algorithms read them from here (one place).
METHODS: dict[str, dict[str, Any]] = {
    "RTN": {},
    "SmoothQuant": {"alpha": 0.5},
    "Awq": {
        "trans": True,
        "trans_version": "v2",
        "weight_clip": False,
        "clip_sym": None,  # None = the weight quantizer's `symmetric`
        "clip_version": "v1",
        "awq_bs": None,
        "save_mem": True,
        "save_scale": False,
        "scale_path": None,
        "save_clip": False,
        "clip_path": None,
        "n_grid": 20,
        # ours: how the ratio is chosen. "mean" = mean loss over all samples (correct);
        # "first_sample" = LLMC's behaviour (the first captured sample's loss only), for parity.
        "ratio_selection": "mean",
        "clip_max_tokens": 512,
    },
    "GPTQ": {
        "true_sequential": True,
        "static_groups": False,
        "actorder": True,
        "percdamp": 0.01,
        "blocksize": 128,
        "chunk_num": 1,
        "owq": False,
        "n_outs": None,
    },
}
# Generic keys LLMC accepts for any method.
_GENERIC_SPECIAL = {"true_sequential": False, "online_rotate": False, "do_gqa_trans": False}


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(lo: float, hi: float = math.inf, *, above: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return ok and (v > lo if above else v >= lo) and v <= hi
    return check


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _is_false(v: Any) -> bool:
    return v is False


# Each `special` option: (check, what is allowed). Types are strict (a quoted 'false' is not a bool, true is not
# a number); options LLMC has but vidquant does not implement must stay off. Checked before any model loads.
SPECIAL_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "alpha": (_is_number(0.0, 1.0), "a number in [0, 1]"),
    "trans": (_is_bool, "true or false"),
    "trans_version": (_one_of("v1", "v2"), "'v1' or 'v2'"),
    "weight_clip": (_is_bool, "true or false"),
    "clip_sym": (_optional(_is_bool), "true, false or null (= the weight quantizer's symmetric)"),
    "clip_version": (_one_of("v1", "v2"), "'v1' or 'v2' (v2 only without weight_clip)"),
    "awq_bs": (_optional(_is_int(1)), "an integer >= 1 or null"),
    "save_mem": (_is_bool, "true or false"),
    "save_scale": (_is_false, "false (saving AWQ scales is not implemented; they are in BlockwiseResult.smooth)"),
    "scale_path": (_optional(lambda v: isinstance(v, str)), "a path string or null"),
    "save_clip": (_is_false, "false (saving clip ranges is not implemented)"),
    "clip_path": (_optional(lambda v: isinstance(v, str)), "a path string or null"),
    "n_grid": (_is_int(1), "an integer >= 1"),
    "ratio_selection": (_one_of("mean", "first_sample"), "'mean' or 'first_sample'"),
    "clip_max_tokens": (_is_int(1), "an integer >= 1"),
    "true_sequential": (_is_bool, "true or false"),
    "static_groups": (_is_bool, "true or false"),
    "actorder": (_is_bool, "true or false"),
    "percdamp": (_is_number(0.0, above=True), "a finite number > 0"),
    "blocksize": (_is_int(1), "an integer >= 1"),
    "chunk_num": (_is_int(1), "an integer >= 1"),
    "owq": (_is_false, "false (outlier-aware GPTQ is not implemented)"),
    "n_outs": (_optional(_is_int(0)), "an integer >= 0 or null"),
    "online_rotate": (_is_false, "false (online rotation is not implemented for Wan)"),
    "do_gqa_trans": (_is_false, "false (Wan has no grouped-query attention)"),
}


def _rule_for(key: str, default: Any) -> tuple[Callable[[Any], bool], str]:
    """The rule of a `special` option; one without an entry is typed by its default (None: anything)."""
    if key in SPECIAL_RULES:
        return SPECIAL_RULES[key]
    if isinstance(default, bool):
        return _is_bool, "true or false"
    if isinstance(default, int):
        return _is_int(-(2**63)), "an integer"
    if isinstance(default, float):
        return _is_number(-math.inf), "a finite number"
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), "a string"
    return (lambda v: True), "anything"


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters (a YAML alias bomb must not print megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
_METHOD_ALIASES = {"awq": "Awq", "AWQ": "Awq", "gptq": "GPTQ", "Gptq": "GPTQ", "rtn": "RTN",
                   "smoothquant": "SmoothQuant"}


class VideoGenQuant(_Section):
    # One method, or a chain applied in order to each block (ours: e.g. [SmoothQuant, GPTQ]).
    method: str | list[str]
    weight: QuantSpec
    act: QuantSpec | None = None
    special: dict[str, Any] = {}
    quant_out: bool = False
    tp: Literal[1] = 1
    ignored_layers: dict[str, Any] | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else list(v)
        if not names:
            raise ValueError("got an empty list; allowed: one of " + ", ".join(METHODS))
        for i, name in enumerate(names):
            names[i] = _METHOD_ALIASES.get(name, name)
            if names[i] not in METHODS:
                raise ValueError(f"got {name!r}; allowed: {', '.join(METHODS)}{_suggest(name, METHODS)}")
        return names[0] if isinstance(v, str) else names

    @model_validator(mode="after")
    def _special_keys(self) -> VideoGenQuant:
        allowed = dict(_GENERIC_SPECIAL)
        for m in self.methods:
            allowed.update(METHODS[m])
        for key, value in self.special.items():
            if key not in allowed:
                raise ValueError(
                    f"special.{key}: unknown for {'+'.join(self.methods)}; allowed: "
                    f"{', '.join(sorted(allowed)) or 'none'}{_suggest(key, allowed)}"
                )
            check, what = _rule_for(key, allowed[key])
            if not check(value):
                raise ValueError(f"special.{key}: got {_short(value)}; allowed: {what}")
        self._check_combinations()
        if self.weight.static:
            raise ValueError("weight.static: got True; static scales are for activations")
        if ("GPTQ" in self.methods and self.weight.quant_type == "nvfp4-quant"
                and not self.special_for("GPTQ")["static_groups"]):
            raise ValueError("special.static_groups: got False; GPTQ on nvfp4 needs static_groups: true (the e4m3 "
                             "block scales share one fp32 global scale taken from the whole weight)")
        if self.act is not None and self.act.granularity not in ("per_token", "per_tensor", "per_block"):
            raise ValueError(f"act.granularity: got {self.act.granularity!r}; allowed: per_token, per_tensor")
        if self.weight.granularity == "per_token":
            raise ValueError("weight.granularity: got 'per_token'; allowed: per_tensor, per_channel, per_group")
        return self

    def _check_combinations(self) -> None:
        """Option combinations the algorithms would refuse only after calibration."""
        for m in self.methods:
            sp = self.special_for(m)
            if m == "Awq" and sp["weight_clip"]:
                if sp["clip_version"] != "v1":
                    raise ValueError(f"special.clip_version: got {sp['clip_version']!r}; allowed with weight_clip: "
                                     "'v1' (LLMC's v2 needs calib_algo: learnable, not implemented)")
                if self.weight.granularity == "per_tensor":
                    raise ValueError("special.weight_clip: got True; allowed only with per_channel or per_group "
                                     "weights (weight.granularity is per_tensor)")
            if m == "GPTQ" and sp["actorder"] and self.weight.granularity == "per_group" and not sp["static_groups"]:
                raise ValueError("special.actorder: got True with per_group weights; allowed only with "
                                 "static_groups: true (group grids must stay contiguous for the export)")

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(self.method)

    def special_for(self, method: str) -> dict[str, Any]:
        """`special` with this method's defaults filled in."""
        return {**_GENERIC_SPECIAL, **METHODS[method], **self.special}


class QuantSection(_Section):
    video_gen: VideoGenQuant


class SaveSection(_Section):
    save_lightx2v: bool = False
    save_path: str = "./save"
    save_fake: bool = False
    save_trans: bool = False
    # ours
    overwrite: bool = False
    weight_scale_dtype: Literal["float32", "bfloat16"] = "float32"  # LLMC writes bfloat16
    max_shard_size: str = "10GB"

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v


def parse_size(text: str) -> int:
    """'10GB', '500MB', '20KB', '1024B' -> bytes (powers of 1024); ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", str(text).upper())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"got {text!r}; allowed: a positive size such as '10GB', '500MB' or '20KB'")
    return int(float(m.group(1)) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[m.group(2)])


# Fields LLMC reads and that have no effect for Wan: accepted so LLMC files load, with a warning when set to a
# value that would change something in LLMC.
_NO_EFFECT = {
    ("model", "tokenizer_mode"): "Wan has no tokenizer mode",
    ("model", "use_cpu_to_save_cuda_mem_for_catcher"): "unused by the Wan capture path (also in LLMC)",
    ("calib", "n_samples"): "every sample in samples.json is used (as LLMC for video)",
    ("calib", "preproc"): "unused for video (also in LLMC)",
    ("calib", "padding"): "unused for video (also in LLMC)",
    ("calib", "apply_chat_template"): "unused for video (also in LLMC)",
    ("calib", "seq_len"): "AWQ's clip token count is quant.video_gen.special.clip_max_tokens",
    ("eval", "seq_len"): "unused for video (also in LLMC)",
    ("eval", "inference_per_block"): "the whole model is always evaluated",
    ("save", "save_fake"): "fake-quant checkpoints are not written; use save_lightx2v",
    ("save", "save_trans"): "transformed checkpoints are not written; use save_lightx2v",
}


class Config(_Section):
    """A whole LLMC video_gen config."""

    base: BaseSection = BaseSection()
    model: ModelSection
    calib: CalibSection | None = None
    eval: EvalSection | list[EvalSection] | None = None
    quant: QuantSection
    save: SaveSection = SaveSection()
    # Where the file came from, for error messages and `resolve_path`; not part of the YAML.
    _source: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        task = self.task
        if self.calib is not None and self.calib.name != task:
            raise ValueError(f"calib.name: got {self.calib.name!r}; model.type {self.model.type} needs {task!r}")
        for ev in self.evals:
            if ev.name != task:
                raise ValueError(f"eval.name: got {ev.name!r}; model.type {self.model.type} needs {task!r}")
        needs_data = set(self.quant.video_gen.methods) - {"RTN"}
        if needs_data and self.calib is None:
            raise ValueError(f"calib: missing; {', '.join(sorted(needs_data))} needs calibration data")
        if self.quant.video_gen.ignored_layers:
            raise ValueError("quant.video_gen.ignored_layers: got a non-empty value; not implemented (every block "
                             "linear is quantized, which is what lightx2v loads)")
        for spec in (self.quant.video_gen.weight, self.quant.video_gen.act):
            for name in ("head_num", "block_size", "ste", "tp"):
                if name == "block_size" and spec is not None and spec.quant_type in BLOCK_QUANT_TYPES:
                    continue  # mx-quant / nvfp4-quant: the format's block (checked in QuantSpec)
                if spec is not None and getattr(spec, name) not in (None, False, 1):
                    raise ValueError(f"quant.video_gen: {name}: got {getattr(spec, name)!r}; not implemented for "
                                     "Wan (per_head granularity is refused too)")
        act = self.quant.video_gen.act
        if act is not None and (act.static or act.quant_type == "nvfp4-quant") and self.calib is None:
            raise ValueError("calib: missing; static activation scales (act.static, or nvfp4's input global "
                             "scale) are calibrated on data")
        return self

    def check_paths(self) -> None:
        """Raise ConfigError if a path the run reads does not exist: a quick first pass (no heavy imports) so a
        mistyped path is reported at once; `vidquant.run.prepare` then checks the contents."""
        wanted = [("model.path", self.model.path, ""), ("model.lora_path", self.model.lora_path, "")]
        wanted += [("calib.path", self.calib.path, "samples.json")] if self.calib else []
        wanted += [("eval.path", ev.path, "samples.json") for ev in self.evals]
        for field, value, inside in wanted:
            if value is None:
                continue
            path = self.resolve_path(value)
            if not (path / inside if inside else path).exists():
                what = f"{path / inside} does not exist" if inside and path.is_dir() else f"{path} does not exist"
                raise ConfigError(f"{self.source or 'config'}: {field}: {what}")

    def warn_no_effect(self) -> list[str]:
        """Log (and return) a warning for each LLMC field that is set but does nothing for Wan."""
        sections = {"model": [self.model], "calib": [self.calib] if self.calib else [], "eval": self.evals,
                    "save": [self.save]}
        notes = []
        for (section, name), why in _NO_EFFECT.items():
            for sec in sections[section]:
                value = getattr(sec, name)
                if value not in (None, False):
                    notes.append(f"{section}.{name}: {_short(value)} has no effect ({why})")
        for note in notes:
            log.warning("%s", note)
        return notes

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def task(self) -> str:
        """t2v or i2v. Wan2.2 TI2V-5B is one model for both: its sets say which (``calib.name`` first)."""
        if self.model.type == "Wan22TI2V":
            first = self.calib or next(iter(self.evals), None)
            return "i2v" if first is not None and first.name == "i2v" else "t2v"
        return "i2v" if self.model.type in ("WanI2V", "Wan22I2V") else "t2v"

    @property
    def evals(self) -> list[EvalSection]:
        if self.eval is None:
            return []
        return self.eval if isinstance(self.eval, list) else [self.eval]

    def resolve_path(self, p: str) -> Path:
        """Resolve a path from the config: absolute, or relative to the working directory if it exists
        there, else relative to the config file's folder (LLMC's paths are relative to where it runs)."""
        path = Path(os.path.expanduser(p))
        if path.is_absolute() or path.exists() or self._source is None:
            return path
        alt = Path(self._source).parent / path
        return alt if alt.exists() else path


# --------------------------------------------------------------------------------------------------- io
def check_device(device: str, field: str = "model.device") -> None:
    """Raise ConfigError unless `device` is auto, cpu, mps, cuda or cuda:N, and CUDA is there when named.
    (Imports torch: call it after the config itself has been validated.)"""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{field}: got {device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{field}: got {device!r}; CUDA is not available on this machine (use cpu or auto)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{field}: got {device!r}; this machine has {torch.cuda.device_count()} CUDA device(s)")


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_branch(part: Any) -> bool:
    """A union branch pydantic puts in error locations (`eval.EvalSection.fps`, `eval.list[EvalSection]`)."""
    return isinstance(part, str) and (part in {c.__name__ for c in _SECTIONS} or part.startswith("list["))


def _relevant(errors: list) -> list:
    """Drop "should be a list / a dict" complaints from the union branch the input did not choose."""
    wrong_branch = ("list_type", "model_type", "dict_type", "model_attributes_type")
    kept = [e for e in errors if not (e["type"] in wrong_branch and any(map(_is_branch, e["loc"])))]
    return kept or errors


def _format_error(err: ValidationError, source: str | None) -> str:
    where = f"{source}: " if source else ""
    lines = []
    for e in _relevant(err.errors()):
        loc = ".".join(str(p) for p in e["loc"] if not _is_branch(p))
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            field = str(e["loc"][-1])
            parent = _section_for(e["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent else []
            lines.append(
                f"{where}{loc}: unknown field{_suggest(field, allowed)}; allowed: {', '.join(allowed)}"
            )
        elif e["type"] == "missing":
            lines.append(f"{where}{loc}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            # Cross-field checks report "sub.field: ..." relative to the section that raised them.
            head, sep, rest = msg.partition(": ")
            if sep and " " not in head:
                loc, msg = (f"{loc}.{head}" if loc else head), rest
            shown = "" if isinstance(value, dict) or "got " in msg else f" (value: {_short(value)})"
            lines.append(f"{where}{loc}: {msg}{shown}")
    return "; ".join(lines)  # one line: the CLI prints it after "error: "


def _section_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic class at a location, to list its allowed fields."""
    cls: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if field is None:
            # union branches are named after the class in pydantic's loc; look the class up by name
            named = {c.__name__: c for c in _SECTIONS}
            cls = named.get(str(part), cls)
            continue
        ann = field.annotation
        cls = next((c for c in _SECTIONS if c is ann or c in getattr(ann, "__args__", ())), None)
        if cls is None:
            return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


_SECTIONS = [BaseSection, ModelSection, CalibSection, EvalSection, QuantSpec, VideoGenQuant, QuantSection,
             SaveSection, Config]


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML with three changes: a duplicate key is an error (not a silent overwrite), aliases may not expand
    past _MAX_NODES nodes (a "billion laughs" file), and 1e-3 is a float as in YAML 1.2 (PyYAML's YAML 1.1 rules
    read it as the string '1e-3')."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r} (first at line {seen[key].line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
_MAX_NODES = 100_000


def _expanded_size(node, sizes: dict[int, int], active: set[int]) -> int:
    """Number of nodes once every alias is expanded (aliased nodes are shared objects in the graph)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise yaml.YAMLError("recursive alias (a node that contains itself)")
    active.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, active)
        if total > _MAX_NODES:
            raise yaml.YAMLError(f"aliases expand to more than {_MAX_NODES} nodes; refusing (a YAML alias bomb?)")
    active.discard(key)
    sizes[key] = total
    return total


def _load_yaml_text(text: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply (hundreds of levels); refusing") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as Python data, with the strict rules of `_StrictLoader`, or ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return _load_yaml_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: malformed YAML{where}: {_short(problem, 200)}") from None


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it (with 1e-3 a float): 0.75, true, [a, b], e4m3, null."""
    if text == "":
        return ""
    try:
        return _load_yaml_text(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"value {_short(text)}: not a YAML value ({_short(getattr(err, 'problem', err))})") from None


def _parse_value(text: str) -> Any:
    """CLI / notebook override values are YAML scalars: 0.75, true, [a, b], e4m3, null."""
    return parse_scalar(text)


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any] | None) -> dict:
    """Set dotted fields in a raw config dict: ['quant.video_gen.special.alpha=0.8'] or
    {'quant.video_gen.special.alpha': 0.8}. Missing intermediate sections are created; validation
    happens afterwards, so a misspelled field fails there with its dotted name."""
    raw = yaml.safe_load(yaml.safe_dump(raw)) if raw else {}
    if not overrides:
        return raw
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return raw


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item[:80]}: expected the form a.b.c=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"--set {item[:80]}: the field {key!r} is not a dotted name like quant.video_gen.method")
    try:
        return key, _parse_value(text.strip())
    except ConfigError as err:
        raise ConfigError(f"--set {key}: {err}") from None


def parse_config(raw: dict, source: str | None = None) -> Config:
    """Validate a raw dict (as loaded from YAML) into a Config, or raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None
    cfg._source = source
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load an LLMC video_gen YAML file, apply overrides, validate."""
    raw = read_yaml(path)
    if raw is not None and not isinstance(raw, dict):
        return parse_config(raw, source=str(path))  # refuses it, naming the file
    return parse_config(apply_overrides(raw or {}, overrides), source=str(path))


def dump_config(cfg: Config) -> str:
    """YAML text that loads back to an equal Config (round trip)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
