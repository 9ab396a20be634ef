"""Bootstrap intervals and paired differences (vidquant.eval.stats) on known distributions."""

import numpy as np
import pytest

from vidquant.eval.stats import Interval, marker, mean_ci, paired_difference


def test_interval_covers_true_mean_at_nominal_rate():
    """Over many samples of 64 normal values the 95 % interval holds the true mean ~95 % of the time, and its
    width is about 2·1.96·σ/√n."""
    rng = np.random.default_rng(1)
    hits, widths = 0, []
    for _ in range(200):
        iv = mean_ci(rng.normal(3.0, 2.0, 64), n_resamples=500)
        hits += iv.low <= 3.0 <= iv.high
        widths.append(iv.high - iv.low)
    assert 0.88 <= hits / 200 <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / 8, rel=0.12)


def test_deterministic_and_mean_inside():
    x = np.random.default_rng(2).exponential(1.0, 40)
    a, b = mean_ci(x), mean_ci(x)
    assert a == b
    assert a.low < a.mean < a.high and a.n == 40
    assert a.mean == pytest.approx(x.mean())


def test_nonfinite_left_out_and_degenerate_cases():
    assert mean_ci([1.0, np.inf, 3.0, np.nan]).n == 2
    assert mean_ci([2.0, 2.0, 2.0]) == Interval(2.0, 2.0, 2.0, 3)
    assert mean_ci([5.0]) == Interval(5.0, 5.0, 5.0, 1)
    assert mean_ci([np.inf]).n == 0 and np.isnan(mean_ci([]).mean)


def test_pairing_removes_shared_spread():
    """Two methods that differ by 0.1 on every clip, on clips whose own spread is 10: the unpaired intervals
    overlap widely, the paired difference is 0.1 with a tight interval that excludes 0."""
    base = np.random.default_rng(3).normal(0, 10, 64)
    a, b = base + 0.1 + np.random.default_rng(4).normal(0, 0.01, 64), base
    ia, ib = mean_ci(a), mean_ci(b)
    assert ia.low < ib.high and ib.low < ia.high
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.1, abs=0.01) and d.excludes_zero()
    assert marker(d) == "*" and marker(d, floor=0.5) == "~"
    with pytest.raises(ValueError, match="length"):
        paired_difference(a, b[:3])


def test_no_difference_is_not_significant():
    rng = np.random.default_rng(5)
    d = paired_difference(rng.normal(0, 1, 64), rng.normal(0, 1, 64))
    assert d.low < 0 < d.high and marker(d) == ""


def _clips(psnr_by_method, floor_psnr=60.0, traj_by_method=None):
    """Synthetic per-clip rows: 16 prompts × 2 seeds per method, W8A8."""
    import pandas as pd

    rng = np.random.default_rng(7)
    prompt_effect = rng.normal(0, 3, 32)  # shared by every method: pairing must remove it
    rows = []
    for method, shift in psnr_by_method.items():
        traj = (traj_by_method or {}).get(method, 0.5)
        for k in range(32):
            rows.append({"method": method, "format": "W8A8-int8", "eval": "e", "sample": k % 16, "seed": k // 16,
                         "psnr": 40 + shift + prompt_effect[k] + rng.normal(0, 0.05), "floor_psnr": floor_psnr,
                         "traj_err_px": traj + rng.normal(0, 0.01), "floor_traj_err_px": 0.2})
    return pd.DataFrame(rows)


def test_interval_table_pairs_against_rtn_and_marks_floor():
    import pandas as pd

    from vidquant.tables import interval_markdown, interval_table, verdict

    clips = _clips({"RTN": 0.0, "GPTQ": 1.0, "AWQ": 0.0}, traj_by_method={"GPTQ": 0.55, "AWQ": 1.5})
    t = interval_table(clips).set_index("method")
    assert t.loc["GPTQ", "d_psnr"] == pytest.approx(1.0, abs=0.05) and t.loc["GPTQ", "d_psnr_sig"] == "*"
    assert t.loc["AWQ", "d_psnr_sig"] == ""  # same as RTN up to clip noise
    assert t.loc["GPTQ", "d_traj_err_px_sig"] == "~"  # significant, but under the 0.2 px floor
    assert t.loc["AWQ", "d_traj_err_px_sig"] == "*"
    assert pd.isna(t.loc["RTN"].get("d_psnr", np.nan))
    assert not t.loc["GPTQ", "psnr_at_floor"]
    assert interval_table(_clips({"RTN": 0.0}, floor_psnr=30.0)).loc[0, "psnr_at_floor"]
    # unpaired intervals of GPTQ and RTN overlap (prompt spread 3 dB), the paired one does not include 0
    assert t.loc["GPTQ", "psnr_lo"] < t.loc["RTN", "psnr_hi"]
    md = interval_markdown(t.reset_index(), pd.DataFrame({"method": ["RTN"], "format": ["W8A8-int8"],
                                                          "mean_sqnr_db": [44.0], "mean_timestep_rel_err": [0.01]}))
    assert "≤floor" not in md and "+1" in md and "44" in md
    cells = pd.DataFrame({"method": ["RTN", "GPTQ", "AWQ"], "format": ["W8A8-int8"] * 3,
                          "mean_sqnr_db": [44.0, 46.0, 45.0]})
    words = verdict(t.reset_index(), cells)
    assert words[0] == ("W8A8-int8: by per-layer SQNR (deterministic, primary): "
                        "GPTQ (46 dB) > AWQ (45 dB) > RTN (44 dB).")
    assert "GPTQ vs RTN over 32 clips: psnr +0.9" in words[1] and "dB [+0.9" in words[1]
    assert "(real)" in words[1] and "(below the noise floor or jitter)" in words[1]


def test_write_tables_round_trip(tmp_path):
    import pandas as pd

    from vidquant.tables import EvalSettings, verdict, write_tables

    clips = _clips({"RTN": 0.0, "GPTQ": 1.0})
    cells = pd.DataFrame({"method": ["RTN", "GPTQ"], "format": ["W8A8-int8"] * 2, "mean_sqnr_db": [44.0, 46.0],
                          "mean_timestep_rel_err": [0.01, 0.008]})
    stem = tmp_path / "methods_formats_t2v"
    write_tables(stem, "t2v", cells, clips, EvalSettings(16, (0, 1)))
    md = (tmp_path / "methods_formats_t2v.md").read_text()
    assert "--prompts 16 --seeds 0 1" in md and "16 prompts × 2 seeds" in md and "GPTQ vs RTN" in md
    back = verdict(pd.read_csv(f"{stem}_intervals.csv"), pd.read_csv(f"{stem}.csv"))
    assert back == verdict(pd.read_csv(f"{stem}_intervals.csv"), cells) and "(real)" in back[1]
    assert len(pd.read_csv(f"{stem}_clips.csv")) == 64


@pytest.mark.parametrize("argv", [["--prompts", "40"], ["--prompts", "0"], ["--seeds", "1", "1"]])
def test_tables_cli_rejects_bad_settings_before_any_run(argv, capsys):
    from vidquant.tables import main

    with pytest.raises(SystemExit) as e:
        main(["--task", "t2v", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ("--prompts" in err or "distinct" in err)


def test_from_runs_without_runs_is_a_usage_error(tmp_path):
    from vidquant.tables import main

    with pytest.raises(SystemExit) as e:
        main(["--task", "t2v", "--from-runs", "--runs", str(tmp_path), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and not (tmp_path / "out").exists()


def test_format_verdict_pairs_rtn_across_formats():
    """RTN W4A8 against RTN W8A8 on the same clips: a drift 0.3 px larger in every clip is real; a prompt error
    equal up to noise is not; a format without per-clip rows is not listed."""
    import pandas as pd

    from vidquant.tables import format_verdict

    clips = _clips({"RTN": 0.0})
    clips["traj_drift_px"] = 0.1 + np.random.default_rng(3).normal(0, 0.02, len(clips))
    noise = np.random.default_rng(4).normal(0, 0.02, (2, len(clips)))
    w4 = clips.assign(format="W4A8", psnr=clips["psnr"] - 13, traj_drift_px=clips["traj_drift_px"] + 0.3 + noise[0],
                      traj_err_px=clips["traj_err_px"] + noise[1])
    lines = format_verdict(pd.concat([clips, w4], ignore_index=True))
    assert len(lines) == 1 and lines[0].startswith("RTN W4A8 vs RTN W8A8-int8 over 32 clips: psnr -13 dB")
    assert "traj_drift_px +0.297 px [+0.29, +0.305]" in lines[0]
    assert "(real)" in lines[0]
    assert "traj_err_px" in lines[0] and lines[0].endswith("(not significant).")
    assert format_verdict(clips) == []
