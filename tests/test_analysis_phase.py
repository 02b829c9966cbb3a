"""A TPE search's phase (the non-adaptive start-up, then TPE) is a term of the adjusted-effects OLS:
checked against an explicit design matrix solved by numpy, on trials where TPE's preference for
mix-back coincides with a shift between the phases."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import report, stats
from analysis.load import Experiment

N, START = 48, 16


def tpe_experiment(sampler: str = "tpe", startup_design: int = START) -> Experiment:
    rng = np.random.default_rng(7)
    number = np.arange(N)
    adaptive = number >= START
    mixback = np.where(adaptive, rng.random(N) < 0.85, number % 2 == 0)  # TPE keeps mix-back on
    noise = rng.random(N) < 0.5
    rrc = rng.random(N) < 0.5
    knn = 0.5 + 0.05 * mixback - 0.03 * noise + 0.04 * adaptive + rng.normal(0, 0.005, N)
    table = pd.DataFrame({"optuna_number": number, "status": "COMPLETE", "pos_rrc": rrc.astype(int),
                          "pos_noise": noise * (1 + rrc), "mixback": mixback, "mixback_energy_adjust": False,
                          "knn_e2": knn})
    return Experiment(Path("tpe"), {"startup_design": startup_design}, {"sampler": sampler}, table, None, 2, [2],
                      None, "test")


def test_the_phase_term_is_the_explicit_design_matrix_fit():
    exp = tpe_experiment()
    t = exp.table
    X = np.column_stack([np.ones(N), t.pos_rrc > 0, t.pos_noise > 0, t.mixback, t.optuna_number >= START])
    beta, rss, rank, _ = np.linalg.lstsq(X.astype(float), t.knn_e2.to_numpy(), rcond=None)
    assert rank == X.shape[1]
    rows = stats.effects_adjusted(exp).set_index("factor")
    for i, name in enumerate(["op:rrc", "op:noise", "mixback", stats.PHASE], start=1):
        assert rows.loc[name, "estimate"] == pytest.approx(beta[i], abs=1e-12), name
    se = np.sqrt(rss[0] / (N - 5) * np.linalg.inv(X.T.astype(float) @ X.astype(float))[4, 4])
    assert rows.loc[stats.PHASE, "ci_high"] - rows.loc[stats.PHASE, "estimate"] == pytest.approx(
        se * scipy_stats.t.ppf(0.975, N - 5), rel=1e-9)
    phase = rows.loc[stats.PHASE]
    assert (phase.level, phase.reference, phase.n_level, phase.n_reference) == (
        "adaptive (TPE)", f"start-up (trials 0-{START - 1})", N - START, START)
    assert "Holm over the 4 rows" in phase.method and "sampler phase" in phase.method
    assert rows.loc["mixback", "ci_low"] < 0.05 < rows.loc["mixback", "ci_high"]


def test_without_the_phase_term_mixback_takes_the_phase_shift():
    rows = stats.effects_adjusted(tpe_experiment(sampler="random")).set_index("factor")
    assert stats.PHASE not in rows.index  # random sampling does not adapt: no phase
    assert rows.loc["mixback", "ci_low"] > 0.05  # biased up by the shift it shares with TPE's phase


def test_tpe_without_a_design_starts_with_ten_random_trials():
    assert stats.startup_trials(tpe_experiment(startup_design=0)) == 10
    assert stats.startup_trials(tpe_experiment(sampler="design")) is None


def test_the_report_states_the_phase_term():
    lines = report.header(tpe_experiment().__class__(
        Path("runs/x"), {"startup_design": START, "space": "search_spaces/augs.yaml", "study_name": "x",
                         "storage": "journal:optuna.journal"}, {"sampler": "tpe"}, tpe_experiment().table.assign(
            best_knn=0.5, last_knn=0.5, epochs_run=2, trial_dir="t", best_epoch=2), None, 2, [2], None, "test"))
    assert any("sampler phase" in line and f"trials 0-{START - 1}" in line for line in lines)
