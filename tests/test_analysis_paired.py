"""A grid's shared seeds enter the comparison as a block (fixed effects), checked against an explicit
design matrix solved by numpy."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats
from analysis.load import Experiment

SEED_SHIFT = {0: 0.10, 1: -0.08, 2: 0.02}  # a large seed effect every variant shares
TRUE = {"default": 0.0, "a": -0.05, "b": 0.02, "c": 0.0}
NOISE = [0.004, -0.006, 0.003, 0.001, -0.002, 0.005, -0.004, 0.002, 0.006, -0.003, 0.0, -0.001]


def grid(drop: tuple = (("c", 2),), seeds: bool = True) -> Experiment:
    """4 variants × 3 seeds, kNN = 0.5 + variant + seed shift + fixed noise, one cell missing."""
    rows = []
    for i, (v, s) in enumerate((v, s) for v in TRUE for s in SEED_SHIFT):
        if (v, s) in drop:
            continue
        rows.append({"optuna_number": i, "status": "COMPLETE", "param_variant": v,
                     **({"param_seed": s} if seeds else {}),
                     "knn_e2": 0.5 + TRUE[v] + SEED_SHIFT[s] + NOISE[i]})
    return Experiment(Path("grid"), {}, None, pd.DataFrame(rows), None, 2, [2], None, "test")


def by_hand(table: pd.DataFrame) -> dict[str, tuple]:
    """y ~ 1 + variant dummies (default the reference) + seed dummies (seed 0 the reference), by lstsq."""
    others = [v for v in TRUE if v != "default" and v in set(table.param_variant)]
    X = np.column_stack([np.ones(len(table))]
                        + [(table.param_variant == v).to_numpy(float) for v in others]
                        + [(table.param_seed == s).to_numpy(float) for s in (1, 2)])
    y = table.knn_e2.to_numpy()
    beta, rss, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    assert rank == X.shape[1]
    df = len(y) - X.shape[1]
    se = np.sqrt(np.diag(rss[0] / df * np.linalg.inv(X.T @ X)))
    t = scipy_stats.t.ppf(0.975, df)
    p = 2 * scipy_stats.t.sf(np.abs(beta / se), df)
    order = np.argsort(p[1:len(others) + 1])
    raw = p[1:len(others) + 1]
    holm = np.empty_like(raw)
    holm[order] = np.minimum(1, np.maximum.accumulate((len(raw) - np.arange(len(raw))) * raw[order]))
    return {v: (beta[i], beta[i] - t * se[i], beta[i] + t * se[i], holm[i - 1], df)
            for i, v in enumerate(others, start=1)}


def test_grid_with_shared_seeds_is_the_fixed_effects_fit_by_hand():
    exp = grid()
    rows = stats.effects_adjusted(exp).set_index("level")
    expected = by_hand(exp.table)
    assert set(rows.index) == set(expected)
    for v, (est, lo, hi, p_holm, df) in expected.items():
        r = rows.loc[v]
        assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((est, lo, hi), abs=1e-12)
        assert r.p_holm == pytest.approx(p_holm, rel=1e-9)
        assert f"residual df {df}" in r.method and "seed a block" in r.method and "Holm over the 3" in r.method
    assert rows.loc["c", ["n_level", "n_reference"]].tolist() == [2, 3]


def test_pairing_removes_the_shared_seed_spread():
    exp = grid(drop=())
    paired = stats.effects_adjusted(exp).set_index("level")
    welch = stats.effects_adjusted(exp, paired=False).set_index("level")
    assert welch.method.str.startswith("Welch").all()
    # balanced: the same difference of means, but an interval from the within-seed residual only
    assert paired.estimate.to_numpy() == pytest.approx(welch.estimate.to_numpy(), abs=1e-12)
    assert (paired.ci_high - paired.ci_low < (welch.ci_high - welch.ci_low) / 5).all()
    assert paired.loc["a", "ci_high"] < 0 < welch.loc["a", "ci_high"]  # the planted -0.05, seen only paired


def test_a_grid_without_a_shared_block_stays_welch():
    rows = stats.effects_adjusted(grid(seeds=False))
    assert rows.method.str.startswith("Welch's t against the default").all()
