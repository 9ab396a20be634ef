"""Checkpoint I/O, Wan <-> diffusers key mapping, the lightx2v-compatible converter, verification
and lightx2v inference configs."""

# Eager imports on purpose: `verify` is both a submodule and a function, and binding the function
# here after the submodule import is what makes `from vidquant.export import verify` the function.
from vidquant.export.converter import ConverterError, UnsupportedModelError, convert
from vidquant.export.io import CheckpointError, atomic_dir, load_state_dict, save_sharded
from vidquant.export.keymap import detect_layout, to_diffusers, to_wan
from vidquant.export.lightx2v_config import ConfigError, read_lightx2v_config, write_lightx2v_config
from vidquant.export.verify import Problem, verify

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConverterError",
    "Problem",
    "UnsupportedModelError",
    "atomic_dir",
    "convert",
    "detect_layout",
    "load_state_dict",
    "read_lightx2v_config",
    "save_sharded",
    "to_diffusers",
    "to_wan",
    "verify",
    "write_lightx2v_config",
]
