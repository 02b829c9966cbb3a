"""The t-interval over seeds and the seed-and-clip bootstrap of a balanced-accuracy difference, against
hand computations."""

import math

import numpy as np
import pytest
import torch

from uclser_tune.evaluation.metrics import balanced_accuracy
from uclser_tune.evaluation.stats import bootstrap_bacc_diff, t_interval


def test_t_interval_is_the_textbook_one_sample_t():
    diffs = [0.05, 0.02, 0.07, -0.01]
    mean = 0.0325
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)  # 0.035
    half = 3.182446305284263 * sd / 2  # t(0.975, 3) from a table, sd / sqrt(4)
    t = mean / (sd / 2)
    p = 0.160  # two-sided, t = 1.857 with 3 df, from a table
    got = t_interval(diffs)
    assert got[:3] == pytest.approx((mean, mean - half, mean + half)) and t == pytest.approx(1.857, abs=1e-3)
    assert got[3] == pytest.approx(p, abs=1e-3)


@pytest.mark.parametrize("values", [[0.3], [0.1, 0.1, 0.1]])
def test_t_interval_is_nan_without_spread(values):
    mean, lo, hi, p = t_interval(values)
    assert mean == pytest.approx(values[0]) and math.isnan(lo) and math.isnan(hi) and math.isnan(p)


def _correct(rng, labels, p):
    return rng.random((len(p), len(labels))) < np.asarray(p)[:, None]


def test_observed_difference_is_the_mean_over_seeds_of_balanced_accuracy_differences():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 90)
    a, b = _correct(rng, labels, [0.7, 0.8, 0.6]), _correct(rng, labels, [0.5, 0.6, 0.55])

    def bacc(correct):
        y = torch.from_numpy(labels)
        return balanced_accuracy(y, torch.where(torch.from_numpy(correct), y, -1))

    want = np.mean([bacc(a[s]) - bacc(b[s]) for s in range(3)])
    assert bootstrap_bacc_diff(a, b, labels, n_boot=50)[0] == pytest.approx(want)
    base = b[:1]  # a baseline without seed is broadcast against every seed of a
    want = np.mean([bacc(a[s]) - bacc(base[0]) for s in range(3)])
    assert bootstrap_bacc_diff(a, base, labels, n_boot=50)[0] == pytest.approx(want)


def test_one_seed_matches_the_stratified_sampling_variance():
    """S = 1: per class the bootstrap draws n_c clips, so var = Σ_c var(d | c) / n_c / C² with d the paired
    per-clip difference (plug-in variance). Unpaired draws for a and b, or draws ignoring classes, differ."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), [20, 35, 50])
    shared = rng.random(len(labels)) < 0.6
    a = (shared | (rng.random(len(labels)) < 0.3))[None]  # a strongly correlated with b: pairing matters
    b = (shared & (rng.random(len(labels)) < 0.8))[None]
    d = a[0].astype(float) - b[0]
    want_sd = np.sqrt(sum(d[labels == c].var() / (labels == c).sum() for c in range(3))) / 3
    diff, low, high, _ = bootstrap_bacc_diff(a, b, labels, n_boot=40000, seed=3)
    assert (high - low) / (2 * 1.96) == pytest.approx(want_sd, rel=0.05)
    assert low < diff < high


def test_seed_spread_widens_the_interval_and_identical_models_give_zero():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, 200)
    same = _correct(rng, labels, [0.7] * 4)
    assert bootstrap_bacc_diff(same, same, labels, n_boot=200)[1:3] == (0.0, 0.0)
    base = _correct(rng, labels, [0.6])
    steady = np.repeat(_correct(rng, labels, [0.75]), 4, axis=0)  # four seeds, one model: no seed spread
    spread = np.stack([_correct(rng, labels, [p])[0] for p in (0.55, 0.65, 0.85, 0.95)])
    _, lo1, hi1, _ = bootstrap_bacc_diff(steady, base, labels, n_boot=4000)
    _, lo2, hi2, _ = bootstrap_bacc_diff(spread, base, labels, n_boot=4000)
    assert hi2 - lo2 > 1.3 * (hi1 - lo1)


def test_p_value_is_small_for_a_clear_gap_and_large_for_none():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 300)
    good, bad = _correct(rng, labels, [0.9, 0.92, 0.88]), _correct(rng, labels, [0.5])
    assert bootstrap_bacc_diff(good, bad, labels, n_boot=2000)[3] == pytest.approx(2 / 2001)
    other = _correct(rng, labels, [0.9, 0.92, 0.88])
    assert bootstrap_bacc_diff(good, other, labels, n_boot=2000)[3] > 0.2
