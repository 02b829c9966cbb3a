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


def test_groups_of_clips_are_drawn_together():
    """S = 1, every class m groups of r clips: per class the bootstrap draws m groups, so var = Σ_c
    var(group mean of d | c) / m / C². Clips of a group that agree (near-copies) widen the interval by
    about sqrt(r) against drawing the clips alone; groups of one clip are the plain clip bootstrap."""
    rng = np.random.default_rng(6)
    n_classes, m, r = 4, 7, 5
    labels = np.repeat(np.arange(n_classes), m * r)
    groups = np.arange(n_classes * m).repeat(r) * 3 + 1  # ids need not be 0..n-1
    a = np.repeat(rng.random(n_classes * m) < 0.7, r)[None]  # a group is right or wrong as a whole
    b = np.repeat(rng.random(n_classes * m) < 0.4, r)[None]
    group_d = (a[0].astype(float) - b[0]).reshape(n_classes, m, r).mean(-1)
    want_sd = np.sqrt(sum(group_d[c].var() / m for c in range(n_classes))) / n_classes
    diff, low, high, _ = bootstrap_bacc_diff(a, b, labels, n_boot=40000, seed=3, groups=groups)
    assert low < diff < high
    assert (high - low) / (2 * 1.96) == pytest.approx(want_sd, rel=0.05)
    _, clip_low, clip_high, _ = bootstrap_bacc_diff(a, b, labels, n_boot=40000, seed=3)
    assert (high - low) / (clip_high - clip_low) == pytest.approx(np.sqrt(r), rel=0.1)
    assert bootstrap_bacc_diff(a, b, labels, n_boot=500, groups=np.arange(len(labels)) * 2) == \
        bootstrap_bacc_diff(a, b, labels, n_boot=500)


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
