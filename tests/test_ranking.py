"""The deterministic ranking check across CPU classes (vidquant.eval.ranking)."""

import pytest

from vidquant.eval.ranking import main, order_conflicts
from vidquant.quant.int8_gemm import cpu_flags


def _report(rtn, gptq, err_rtn=0.02, err_gptq=0.01):
    return {"RTN/W4A8": {"mean_sqnr_db": rtn, "mean_timestep_rel_err": err_rtn},
            "GPTQ/W4A8": {"mean_sqnr_db": gptq, "mean_timestep_rel_err": err_gptq}}


def test_order_conflicts():
    first = _report(25.0, 39.0)
    assert order_conflicts(first, _report(25.1, 38.9), ["W4A8"], tol=0.05) == []
    assert len(order_conflicts(first, _report(39.5, 39.0), ["W4A8"], tol=0.05)) == 1
    assert order_conflicts(_report(25.0, 25.01), _report(25.02, 25.0), ["W4A8"], tol=0.05) == []  # a tie
    assert "mean_timestep_rel_err" in order_conflicts(first, _report(25.0, 39.0, 0.01, 0.02), ["W4A8"], 0.05)[0]


def test_bad_class_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        main(["--classes", "native", "z80"])
    assert e.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif("avx2" not in cpu_flags(), reason="ISA limits are x86 (AVX2 and up)")
def test_same_ranking_native_and_avx2():
    assert main(["--methods", "RTN", "SmoothQuant", "GPTQ", "--formats", "W8A8-int8", "W4A8"]) == 0
