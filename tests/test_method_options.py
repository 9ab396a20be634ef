"""Each method's options (the MethodConfig dataclasses beside the maths): the edges of every range, the type
checks and the exact messages. Fast and torch-free in what it exercises, so the mutation groups of algos/ run it
for every mutant of the option checks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from vidquant.algos.awq import AwqConfig
from vidquant.algos.base import MethodConfig
from vidquant.algos.gptq import GPTQConfig
from vidquant.algos.rtn import RTNConfig
from vidquant.algos.smoothquant import SmoothQuantConfig


@pytest.mark.parametrize("make", [
    lambda: SmoothQuantConfig(alpha=0.0), lambda: SmoothQuantConfig(alpha=1.0), lambda: SmoothQuantConfig(alpha=1),
    lambda: GPTQConfig(percdamp=0.0), lambda: GPTQConfig(percdamp=0.999), lambda: GPTQConfig(blocksize=1),
    lambda: GPTQConfig(chunk_num=1), lambda: GPTQConfig(n_outs=3), lambda: GPTQConfig(n_outs=None),
    lambda: AwqConfig(n_grid=1), lambda: AwqConfig(clip_max_tokens=1), lambda: AwqConfig(clip_sym=None),
    lambda: AwqConfig(clip_sym=False), lambda: AwqConfig(trans_version="v1"), lambda: RTNConfig(),
])
def test_the_edges_of_every_range_are_allowed(make):
    make()


@pytest.mark.parametrize("make, message", [
    (lambda: SmoothQuantConfig(alpha=-1e-9), "SmoothQuant.alpha: got -1e-09; allowed: 0 <= alpha <= 1"),
    (lambda: SmoothQuantConfig(alpha=1 + 1e-9), "SmoothQuant.alpha: got 1.000000001; allowed: 0 <= alpha <= 1"),
    (lambda: SmoothQuantConfig(alpha=True), "SmoothQuant.alpha: got True; allowed: a number"),
    (lambda: SmoothQuantConfig(alpha=None), "SmoothQuant.alpha: got None; allowed: a number"),
    (lambda: GPTQConfig(percdamp=1.0), "GPTQ.percdamp: got 1.0; allowed: 0 <= percdamp < 1"),
    (lambda: GPTQConfig(percdamp=-0.01), "GPTQ.percdamp: got -0.01; allowed: 0 <= percdamp < 1"),
    (lambda: GPTQConfig(blocksize=0), "GPTQ.blocksize: got 0; allowed: an integer >= 1"),
    (lambda: GPTQConfig(chunk_num=0), "GPTQ.chunk_num: got 0; allowed: an integer >= 1"),
    (lambda: GPTQConfig(blocksize=2.0), "GPTQ.blocksize: got 2.0; allowed: an integer"),
    (lambda: GPTQConfig(blocksize=True), "GPTQ.blocksize: got True; allowed: an integer"),
    (lambda: GPTQConfig(owq=True), "GPTQ.owq: got True; allowed: False (outlier-aware GPTQ is not supported)"),
    (lambda: GPTQConfig(n_outs="3"), "GPTQ.n_outs: got '3'; allowed: an integer or None"),
    (lambda: GPTQConfig(actorder="yes"), "GPTQ.actorder: got 'yes'; allowed: true or false"),
    (lambda: AwqConfig(n_grid=0), "Awq.n_grid: got 0; allowed: an integer >= 1"),
    (lambda: AwqConfig(clip_max_tokens=0), "Awq.clip_max_tokens: got 0; allowed: an integer >= 1"),
    (lambda: AwqConfig(save_clip=True), "Awq.save_clip: got True; allowed: False (the scales are returned"),
    (lambda: AwqConfig(clip_sym="no"), "Awq.clip_sym: got 'no'; allowed: true or false or None"),
    (lambda: AwqConfig(scale_path=3), "Awq.scale_path: got 3; allowed: a string or None"),
    (lambda: AwqConfig(ratio_selection="max"), "Awq.ratio_selection: got 'max'; allowed: 'mean', 'first_sample'"),
])
def test_out_of_range_and_wrong_types_name_the_field(make, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make()


def test_an_integer_for_a_float_becomes_a_float():
    a, b = SmoothQuantConfig(alpha=1), SmoothQuantConfig(alpha=1.0)
    assert a == b and type(a.alpha) is float and type(GPTQConfig(blocksize=4).blocksize) is int


def test_special_dicts_map_onto_the_options():
    assert SmoothQuantConfig.from_special({"alpha": 0.6}).to_special() == {"alpha": 0.6}
    # a chain's shared dict: the other methods' keys (and LLMC's generic ones) are left to their owners
    assert GPTQConfig.from_special({"alpha": 0.6, "blocksize": 64}).blocksize == 64
    with pytest.raises(ValueError, match=r"^SmoothQuant: unknown option\(s\) alfa, beta; allowed: alpha$"):
        SmoothQuantConfig.from_special({"alfa": 0.6, "beta": 1})
    assert RTNConfig.from_special({}) == RTNConfig() and RTNConfig().to_special() == {}
    assert issubclass(RTNConfig, MethodConfig)


def test_messages_name_any_declared_type():
    """A field of a type outside the named ones (a class, a generic alias) is described by its name. (The
    hints are resolved from this module's globals: the class is declared here, its types imported above.)"""
    @dataclasses.dataclass(frozen=True)
    class Custom(MethodConfig):
        name: ClassVar[str] = "Custom"
        where: Path = Path(".")
        sizes: list[int] = dataclasses.field(default_factory=list)
        anything: Any = None

    with pytest.raises(ValueError, match=r"^Custom\.where: got 'x'; allowed: Path$"):
        Custom(where="x")
    with pytest.raises(ValueError, match=r"^Custom\.sizes: got \(1,\); allowed: list$"):
        Custom(sizes=(1,))
    assert Custom(anything=object()).anything is not None  # Any accepts every value


def test_algorithms_take_options_as_config_dict_or_nothing():
    from vidquant.algos.base import ALGORITHMS, METHOD_CONFIGS
    from vidquant.algos.smoothquant import SmoothQuant

    assert SmoothQuant().options == SmoothQuantConfig() and SmoothQuant().special == {"alpha": 0.5}
    assert SmoothQuant(SmoothQuantConfig(alpha=0.6)).special == {"alpha": 0.6}
    assert SmoothQuant({"alpha": 0.7}).options == SmoothQuantConfig(alpha=0.7)
    with pytest.raises(TypeError, match="SmoothQuant: expected SmoothQuantConfig options, got GPTQConfig"):
        SmoothQuant(GPTQConfig())
    # the registry: every method by its LLMC name, with its options class
    assert {n: (ALGORITHMS[n].config_class, METHOD_CONFIGS[n]) for n in ("SmoothQuant", "GPTQ")} == {
        "SmoothQuant": (SmoothQuantConfig, SmoothQuantConfig), "GPTQ": (GPTQConfig, GPTQConfig)}
