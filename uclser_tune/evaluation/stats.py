"""Statistics shared by the retraining summary, the analysis and the benchmarks: Holm's correction, the
t-interval over seeds, and a bootstrap over seeds and evaluation clips."""

from __future__ import annotations

import math

import numpy as np


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the finite p-values (NaN stays NaN and does not count)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[idx]))
        out[idx] = running
    return out


def t_interval(values: list[float] | np.ndarray) -> tuple[float, float, float, float]:
    """(mean, ci_low, ci_high, two-sided p of mean = 0): the one-sample t on ``values``, 95 %. On paired
    differences (one per seed) this is the paired t-test. Interval and p are NaN below 2 values, or when
    all are equal: there is no spread to estimate them from."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2 or x.std(ddof=1) <= 1e-9:
        return mean, math.nan, math.nan, math.nan
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(0.95)
    return mean, float(ci.low), float(ci.high), float(res.pvalue)


def bootstrap_bacc_diff(correct_a: np.ndarray, correct_b: np.ndarray, labels: np.ndarray, n_boot: int = 10000,
                        seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """Mean balanced-accuracy difference a − b over seeds, with a bootstrap over seeds *and* clips.

    A t-test over seeds treats the evaluation clips as fixed; on a small set their sampling is often the
    larger part of the uncertainty, and a claim about the kind of sound (not these clips) must include
    it. ``correct_a`` (S, N) says whether seed s's model got clip n right; ``correct_b`` is (S, N) paired
    by seed with a, or (1, N) for a baseline without seed. Each replicate draws S seeds with replacement
    (the same for a and b) and, per class, as many clips as the class has, with replacement (the same
    clips for a and b, so class sizes and the pairing are kept). With ``groups`` (N,), clips that are not
    independent (near-copies: one recording session, one drum kit) are drawn together: per class, as many
    of its groups as it has, each with all its clips (a class's recall in a replicate is then the share
    right among the drawn clips). Returns the observed difference, the 95 % percentile interval and the
    two-sided bootstrap p (the tail beyond 0, doubled, +1 corrected).
    """
    correct_a, correct_b = np.atleast_2d(correct_a).astype(float), np.atleast_2d(correct_b).astype(float)
    labels = np.asarray(labels)
    n_seeds = correct_a.shape[0]
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    observed = np.zeros(n_seeds)
    boot = np.zeros((n_seeds, n_boot))  # per seed and replicate: bacc_a − bacc_b on the replicate's clips
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    for c in classes:
        in_class = labels == c
        _, unit_of = np.unique(groups[in_class], return_inverse=True)  # each clip's group, 0..m-1
        members = np.eye(unit_of.max() + 1)[unit_of]  # (n_c, m): clip in group
        size, right_a, right_b = members.sum(0), correct_a[:, in_class] @ members, correct_b[:, in_class] @ members
        draw = rng.integers(0, len(size), size=(n_boot, len(size)))
        diff = correct_a[:, in_class].mean(1) - correct_b[:, in_class].mean(1)  # (S,) or broadcast from (1,)
        observed += diff / len(classes)
        boot += (right_a[:, draw].sum(-1) - right_b[:, draw].sum(-1)) / size[draw].sum(-1) / len(classes)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    reps = boot[seeds, np.arange(n_boot)[:, None]].mean(1)
    low, high = np.percentile(reps, [2.5, 97.5])
    tail = min((reps <= 0).sum(), (reps >= 0).sum())
    return float(observed.mean()), float(low), float(high), float(min(1.0, 2 * (tail + 1) / (n_boot + 1)))
