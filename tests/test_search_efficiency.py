"""The pure parts of experiments/search_efficiency.py against hand computations and Ray's own ASHA rule."""

import itertools

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from analysis.load import asha_milestones
from experiments import search_efficiency
from experiments.search_efficiency import (
    Trial,
    epochs_per_trial,
    iid_async_shares,
    reached_shares,
    replay_asha,
    trial_epochs_to_target,
)

# epochs, max_epochs, final score, completion time: completion order B C A E D
TRIALS = [Trial(1, 10, 0.90, 3.0),   # A: pruned at a high score, never counts as reaching
          Trial(10, 10, 0.70, 1.0),  # B
          Trial(3, 10, 0.50, 2.0),   # C
          Trial(10, 10, 0.72, 5.0),  # D: reaches, but completes after E
          Trial(10, 10, 0.80, 4.0)]  # E


def test_trial_epochs_counted_in_completion_order_up_to_the_first_full_trial_at_target():
    assert trial_epochs_to_target(TRIALS, 0.71) == (10 + 3 + 1 + 10, True)  # B, C, A, E
    assert trial_epochs_to_target(TRIALS, 0.70) == (10, True)  # B: a score equal to the target reaches it
    assert trial_epochs_to_target(TRIALS, 0.85) == (34, False)  # only A (pruned) is above: all epochs, not reached
    assert trial_epochs_to_target([], 0.5) == (0, False)


def test_replay_by_hand():
    # rf 2: cutoff = median of the earlier scores at the milestone; marks 1, 2; budget 4 epochs
    # T1 0.5: first everywhere -> 4; T2 0.3 < 0.5 at e1 -> 1; T3 0.8 > median(0.5, 0.3) and > 0.5 -> 4;
    # T4 0.6 >= median(0.5, 0.3, 0.8) = 0.5 at e1, < median(0.5, 0.8) = 0.65 at e2 -> 2
    curves = [dict.fromkeys(range(1, 5), s) for s in (0.5, 0.3, 0.8, 0.6)]
    ran = replay_asha(curves, [1.0, 2.0], 2.0, 4)
    assert ran == [4, 1, 4, 2]
    assert reached_shares(ran, [1, 2, 4]) == [1.0, 0.75, 0.5]
    # a trial that failed after epoch 1 (no score at e2) ends there and records only e1
    failed = [dict.fromkeys(range(1, 5), 0.5), {1: 0.9}, dict.fromkeys(range(1, 5), 0.8)]
    assert replay_asha(failed, [1.0, 2.0], 2.0, 4) == [4, 1, 4]  # T3: 0.8 >= median(0.5, 0.9) at e1, >= 0.5 at e2


@pytest.mark.parametrize("rf,grace,max_t", [(3.0, 1, 10), (2.0, 1, 4), (2.0, 2, 9)])
def test_replay_matches_rays_bracket_for_trials_run_one_after_another(rf, grace, max_t):
    rng = np.random.default_rng(7)
    curves = [{e: s * e / max_t + 0.01 * rng.normal() for e in range(1, max_t + 1)} for s in rng.random(40)]
    bracket = _Bracket(grace, max_t, rf, 0)
    ray_ran = []
    for i, curve in enumerate(curves):
        trial = type("T", (), {"trial_id": str(i)})()
        ran = next((e for e in range(1, max_t + 1)
                    if bracket.on_result(trial, e, curve[e]) == TrialScheduler.STOP), max_t)
        ray_ran.append(ran)
    assert replay_asha(curves, asha_milestones(grace, rf, max_t), rf, max_t) == ray_ran
    assert len(set(ray_ran)) > 1  # some trials were stopped, some not


def test_iid_async_shares_by_hand():
    # one trial always survives; with two, the second survives rung 1 iff it beats the first (1/2):
    # share reaching e2 = (1 + 1/2) / 2
    assert iid_async_shares(1, (1.0,), 2.0, 2, (1, 2)) == [1.0, 1.0]
    first, second = iid_async_shares(2, (1.0,), 2.0, 2, (1, 2), reps=4000)
    assert first == 1.0 and second == pytest.approx(0.75, abs=0.02)


def test_epochs_per_trial_by_hand():
    # rungs 1, 3, 9, 10 with rf 3: every trial runs epoch 1, a third epochs 2-3, a ninth 4-9, 1/27 epoch 10
    assert epochs_per_trial([1, 1 / 3, 1 / 9, 1 / 27], [1, 3, 9, 10]) == pytest.approx(1 + 2 / 3 + 6 / 9 + 1 / 27)
    assert epochs_per_trial([1.0, 1.0, 1.0], [1, 2, 4]) == 4  # nobody stopped: the full budget


def test_the_ratio_interval_resamples_seeds_in_pairs():
    b = [100.0, 400.0, 150.0, 900.0, 260.0]
    a = [2 * x for x in b]  # twice as many in every seed: paired, the ratio cannot vary
    assert search_efficiency.paired_bootstrap_ratio(a, b) == (2.0, 2.0)
    a, b = [1.0, 5.0, 2.0], [2.0, 3.0, 8.0]
    exact = sorted(np.median([a[i] for i in idx]) / np.median([b[i] for i in idx])
                   for idx in itertools.product(range(3), repeat=3))  # every resample of 3 seeds, by hand
    lo, hi = search_efficiency.paired_bootstrap_ratio(a, b, reps=40000)
    assert exact[0] <= lo <= hi <= exact[-1]
    assert sum(r < lo for r in exact) / 27 <= 0.05 and sum(r > hi for r in exact) / 27 <= 0.05


def test_sign_test_and_censoring_by_hand():
    fewer, known, p = search_efficiency.paired_sign_test([1, 2, 3, 4, 5], [2, 3, 4, 9, 6], [True] * 5,
                                                         [True, True, True, False, True])
    assert (fewer, known) == (5, 5) and p == pytest.approx(2 / 2 ** 5)  # two-sided exact binomial
    # a censored value below the other one's leaves the order unknown; a tie too
    assert search_efficiency.paired_sign_test([5, 3], [4, 3], [False, True], [True, True])[:2] == (0, 1)
    assert search_efficiency.paired_sign_test([3, 3], [5, 3], [True, True], [False, True])[:2] == (1, 1)
    assert search_efficiency.paired_sign_test([3], [5], [False], [True])[:2] == (0, 0)
    assert search_efficiency.paired_sign_test([6], [5], [True], [False])[:2] == (0, 0)  # b >= 5: maybe above 6
    assert "upper bounds" in search_efficiency.censoring_note([True, True], [True, False])
    assert "lower bounds" in search_efficiency.censoring_note([False, True], [True, True])
    assert "neither" in search_efficiency.censoring_note([False], [False])
