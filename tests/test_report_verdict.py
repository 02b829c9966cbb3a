"""report.md opens with a short verdict: what passes Holm, the largest unresolved effect and the trials
that would resolve it; only relative paths. The trial estimate is checked against a brute-force power
search, the report against a committed findings folder rebuilt from its trials.parquet."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from optuna.importance import FanovaImportanceEvaluator
from scipy import stats as scipy_stats

from analysis import importance, report, stats
from analysis.rebuild import rebuild
from analysis.run import analyse
from tests.test_analysis_paired import grid

FINDINGS = Path(__file__).resolve().parents[1] / "results"


def brute_force_trials(estimate: float, se: float, n: int, family: int) -> int:
    """The smallest n' >= n whose two-sided Bonferroni test has >= 80 % power, trying n' one by one."""
    z = scipy_stats.norm.ppf(1 - 0.05 / (2 * family))
    for m in range(n, 100 * n):
        shift = abs(estimate) / (se * np.sqrt(n / m))
        if scipy_stats.norm.sf(z - shift) + scipy_stats.norm.cdf(-z - shift) >= 0.8:
            return m
    raise AssertionError("no n found")


@pytest.mark.parametrize("estimate, se, n, family", [(0.072, 0.0293, 48, 20), (-0.1, 0.037, 3, 14),
                                                     (0.03, 0.005, 40, 5), (0.01, 0.02, 32, 15)])
def test_trials_to_resolve_is_the_brute_force_power_search(estimate, se, n, family):
    got = report.trials_to_resolve(estimate, se, n, family)
    want = brute_force_trials(estimate, se, n, family)
    assert abs(got - want) <= 1  # the closed form neglects the far tail: at most one trial less


def test_verdict_names_holm_results_the_largest_unresolved_and_stays_short():
    exp = grid(drop=())
    rows = stats.effects_adjusted(exp)
    lines = report.verdict_lines(exp, rows, extra=[f"extra {i}" for i in range(10)])
    assert len(lines) == report.VERDICT_LINES
    by = rows.set_index("level")
    passed = by[by.p_holm < 0.05]
    assert "a" in passed.index and len(passed) < 3
    assert lines[0].startswith(f"Read at epoch 2 (final), n=12 trials; {len(passed)} of 3 effects pass Holm")
    for v, r in passed.iterrows():
        assert f"variant {v} vs default {report.signed(r.estimate)} [{report.signed(r.ci_low)}, " in lines[1]
    rest = by[by.p_holm >= 0.05]
    big = rest.estimate.abs().idxmax()
    assert f"variant {big} vs default {report.signed(rest.loc[big, 'estimate'])}" in lines[2]
    se = (rest.loc[big, "ci_high"] - rest.loc[big, "ci_low"]) / 2 / scipy_stats.t.ppf(0.975, 6)
    need = report.trials_to_resolve(rest.loc[big, "estimate"], se, 3, 3)
    assert f"about {need} seeds per variant ({need - 3} more than the 3 here)" in lines[3]


def test_nothing_estimable_is_said_not_drawn():
    exp = grid(drop=())
    rows = stats.effects_adjusted(exp).assign(ci_low=np.nan, ci_high=np.nan, p_holm=np.nan)
    assert report.verdict_lines(exp, rows)[0].startswith("Nothing to conclude")


def test_relative_paths_only():
    assert report.relative(report.SPACES_DIR / "augs.yaml") == "search_spaces/augs.yaml"
    assert report.relative("/somewhere/else/runs/x") == "runs/x"
    assert report.relative("runs/x") == "runs/x"


@pytest.mark.slow
def test_committed_grid_regenerates_with_the_verdict_first(tmp_path, monkeypatch):
    # What is checked here is the adjusted effects and the verdict, not the parameter importance (its
    # numbers are checked in test_analysis.py). Optuna's fANOVA enumerates every combination of the split
    # points of a categorical's one-hot columns in each tree, 2^15 for this grid's 15 variants: with its
    # 64 trees, the 2 scopes and 20 bootstrap resamples take about 10 minutes on 2 cores. So the
    # importance runs here with 2 trees and 2 resamples: every step of the report still runs.
    monkeypatch.setitem(importance.EVALUATORS, "fanova",
                        lambda seed: FanovaImportanceEvaluator(seed=seed, n_trees=2))
    monkeypatch.setattr(importance, "BOOTSTRAP", 2)
    exp_dir = rebuild(FINDINGS / "paper_ablations_small", tmp_path / "paper_ablations_small",
                      "paper_ablations.yaml", 6, None, 0)
    out = tmp_path / "out"
    text = analyse(exp_dir, out).read_text()
    committed = pd.read_csv(FINDINGS / "paper_ablations_small" / "effects_adjusted.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "effects_adjusted.csv"), committed)
    head = text.split("## The experiment")[0].splitlines()
    assert head[:3] == ["# Sensitivity analysis: paper_ablations_small", "", "## Verdict"]
    verdict = [line for line in head if line.startswith("- ")]
    assert 1 <= len(verdict) <= report.VERDICT_LINES
    assert "variant mixback_none vs default −0.232 [−0.306, −0.158] (n=3/3, p_holm < 1e-4)" in verdict[1]
    assert str(tmp_path) not in text and "/work/" not in text and "space: `search_spaces/paper_ablations.yaml`" in text
    # only Holm results are highlighted
    assert text.count("**") == 2 * int((committed.p_holm < 0.05).sum())


def test_an_evaluator_is_shown_as_its_planted_truth_recovery_allows():
    rows = pd.DataFrame([{"evaluator": e, "rung": "e2", "n_trials": 48, "param": p, "importance": v, "raw": v,
                          "note": ""} for e in ("fanova", "ped_anova", "good")
                         for p, v in (("views.mixback", 0.7), ("time_reversal_p", 0.3))])
    recovered = {"fanova": (15, 20), "ped_anova": (0, 20), "good": (19, 20), "adjusted effects": (6, 20)}
    lines = report.importance_lines(rows, None, recovered=recovered)
    text = "\n".join(lines)
    assert not any(line.startswith("ped_anova,") for line in lines)  # its ranking is not printed ...
    assert "ped_anova NOT SHOWN" in text and "0 of 20" in text  # ... only why
    assert "fanova READ WITH CARE" in text and "15 of 20" in text and "below the 80%" in text
    assert "**" not in text  # bold is for what passes Holm
    assert any(line.startswith("fanova, trials that reached epoch 2 (n=48): views.mixback 0.70") for line in lines)
    assert "good: this reading recovered the planted truth in 19 of 20" in text
    assert report.trust("adjusted effects", recovered)[0] == "marked"
    assert report.trust("unknown", recovered)[0] == "untested" and report.trust("x", None)[0] == "untested"
    assert report.trust("fanova", {"fanova": (5, 20)})[0] == "hidden"  # 25 %: at most HIDE
    assert report.trust("fanova", {"fanova": (16, 20)})[0] == "trusted"  # 80 %: TRUSTED
