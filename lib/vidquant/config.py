"""Typed LLMC video_gen configs: YAML in and out, validation with clear errors, `a.b.c=value` overrides.

LLMC's video_gen YAML files load as they are (llmc_reference §1). Every section is a pydantic model that
forbids unknown fields, so a typo fails with the dotted field name, the value and what is allowed, before
any model is loaded. Fields marked "ours" are vidquant extensions with LLMC-compatible defaults.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

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
    "METHODS",
]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the dotted field and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------- base
class BaseSection(_Section):
    seed: int = 42


class ModelSection(_Section):
    type: Literal["WanT2V", "WanI2V", "Wan22T2V", "Wan22I2V", "Wan22TI2V"]  # models.MODEL_TYPES
    path: str
    # LLMC requires the key and ignores it for Wan (always bf16). We honour it: "auto" keeps LLMC's bf16.
    torch_dtype: str = "auto"
    lora_path: str | None = None
    tokenizer_mode: str | None = None
    use_cpu_to_save_cuda_mem_for_catcher: bool = False
    device: str = "auto"  # ours: "auto" = cuda if available else cpu

    @field_validator("torch_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        allowed = {"auto", "torch.bfloat16", "bfloat16", "torch.float32", "float32"}
        if v not in allowed:
            raise ValueError(f"got {v!r}; allowed: {sorted(allowed)}")
        return v


class CalibSection(_Section):
    name: Literal["t2v", "i2v"]
    download: bool = False
    path: str
    sample_steps: int = Field(gt=0)
    bs: Literal[1] = 1
    target_height: int = Field(480, gt=0)
    target_width: int = Field(832, gt=0)
    num_frames: int = Field(81, gt=0)
    guidance_scale: float = 5.0
    seed: int = 42
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

    @field_validator("download")
    @classmethod
    def _no_download(cls, v: bool) -> bool:
        if v:
            raise ValueError("got True; allowed: False (vidquant never downloads; point `path` at a local folder)")
        return v


EvalPos = Literal["pretrain", "transformed", "fake_quant", "fake_quant_wo_kv"]


class EvalSection(_Section):
    eval_pos: list[EvalPos] = ["fake_quant"]
    type: Literal["video_gen"] = "video_gen"
    name: Literal["t2v", "i2v"]
    download: bool = False
    path: str
    bs: Literal[1] = 1
    target_height: int = Field(480, gt=0)
    target_width: int = Field(832, gt=0)
    num_frames: int = Field(81, gt=0)
    guidance_scale: float = 5.0
    output_video_path: str
    fps: int = Field(15, gt=0)
    seq_len: int | None = None
    num_samples: int | None = None
    inference_per_block: bool | None = None
    # ours
    num_inference_steps: int = Field(50, gt=0)
    max_sequence_length: int = Field(512, gt=0)


class QuantSpec(_Section):
    """One tensor's quantizer (LLMC `quant.video_gen.weight` / `.act`)."""

    quant_type: Literal["int-quant", "float-quant"] = "int-quant"
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
        if self.static:
            raise ValueError("static: got True; only dynamic activation quantization is supported (as lightx2v)")
        return self

    @property
    def label(self) -> str:
        """Short human name, e.g. 'int8', 'int4g64', 'e4m3'."""
        if self.quant_type == "float-quant":
            return str(self.bit)
        g = f"g{self.group_size}" if self.granularity == "per_group" else ""
        return f"{'int' if self.symmetric else 'uint'}{self.bit}{g}"


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
        for key in self.special:
            if key not in allowed:
                raise ValueError(
                    f"special.{key}: unknown for {'+'.join(self.methods)}; allowed: "
                    f"{', '.join(sorted(allowed)) or 'none'}{_suggest(key, allowed)}"
                )
        if "alpha" in self.special and not 0.0 <= float(self.special["alpha"]) <= 1.0:
            raise ValueError(f"special.alpha: got {self.special['alpha']!r}; allowed: 0 <= alpha <= 1")
        if self.act is not None and self.act.granularity not in ("per_token", "per_tensor"):
            raise ValueError(f"act.granularity: got {self.act.granularity!r}; allowed: per_token, per_tensor")
        if self.weight.granularity == "per_token":
            raise ValueError("weight.granularity: got 'per_token'; allowed: per_tensor, per_channel, per_group")
        return self

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
        task = "i2v" if self.model.type in ("WanI2V", "Wan22I2V") else "t2v"
        if self.calib is not None and self.calib.name != task:
            raise ValueError(f"calib.name: got {self.calib.name!r}; model.type {self.model.type} needs {task!r}")
        for ev in self.evals:
            if ev.name != task:
                raise ValueError(f"eval.name: got {ev.name!r}; model.type {self.model.type} needs {task!r}")
        needs_data = set(self.quant.video_gen.methods) - {"RTN"}
        if needs_data and self.calib is None:
            raise ValueError(f"calib: missing; {', '.join(sorted(needs_data))} needs calibration data")
        return self

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def task(self) -> str:
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
def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_error(err: ValidationError, source: str | None) -> str:
    where = f"{source}: " if source else ""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
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
            shown = "" if isinstance(value, dict) or "got " in msg else f" (value: {value!r})"
            lines.append(f"{where}{loc}: {msg}{shown}")
    return "invalid config\n  " + "\n  ".join(lines)


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


def _parse_value(text: str) -> Any:
    """CLI / notebook override values are YAML scalars: 0.75, true, [a, b], e4m3, null."""
    return yaml.safe_load(text) if text != "" else ""


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
        raise ConfigError(f"override {item!r}: expected the form a.b.c=value")
    key, text = item.split("=", 1)
    return key.strip(), _parse_value(text.strip())


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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_config(apply_overrides(raw or {}, overrides), source=str(path))


def dump_config(cfg: Config) -> str:
    """YAML text that loads back to an equal Config (round trip)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
