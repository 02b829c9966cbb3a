"""The ASHA rung formula (``analysis.load``) against Ray's own scheduler.

The search runs Ray Tune's ``ASHAScheduler`` (one bracket); the analysis and the search-efficiency
protocol need the epochs where it compares trials without running it. The reference here is the
scheduler the search builds: its milestones, and the epochs at which a trial that reports every epoch
gets its score recorded at a rung. Reading them needs Ray's private ``_brackets``/``_rungs``; if Ray
renames them this test errors, which is the signal to re-check the formula.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler

from analysis.load import asha_milestones, asha_rungs

SETTINGS = [(g, rf, m) for g, rf in itertools.product(range(1, 11), (2, 3, 4, 2.5, 1.5))
            for m in range(g, 61)]


def ray_bracket(grace: int, rf: float, max_t: int):
    """The one bracket of the scheduler the search driver builds (``driver.tune_config``)."""
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace,
                         reduction_factor=rf)._brackets[0]


def ray_recorded_epochs(grace: int, rf: float, max_t: int) -> list[int]:
    """Feed one trial's scores for epochs 1..max_t to Ray's bracket; the epochs at which a rung records it."""
    bracket, trial, epochs = ray_bracket(grace, rf, max_t), SimpleNamespace(trial_id="t"), []
    for epoch in range(1, max_t + 1):
        before = sum(len(recorded) for _, recorded in bracket._rungs)
        bracket.on_result(trial, epoch, 0.5)
        if sum(len(recorded) for _, recorded in bracket._rungs) > before:
            epochs.append(epoch)
    return epochs


def test_milestones_are_rays():
    wrong = [(s, asha_milestones(*s)) for s in SETTINGS
             if asha_milestones(*s) != sorted(m for m, _ in ray_bracket(*s)._rungs)]
    assert wrong == []


def test_rungs_are_the_epochs_where_ray_compares():
    """With rf >= 2 consecutive milestones are at least one epoch apart, so each rung is one epoch."""
    wrong = [(s, asha_rungs(*s)) for s in SETTINGS
             if s[1] >= 2 and asha_rungs(*s) != sorted({*ray_recorded_epochs(*s), s[2]})]
    assert wrong == []


def test_rungs_of_the_shipped_spaces():
    assert asha_rungs(1, 2, 4) == [1, 2, 4]  # smoke.yaml at 4 epochs
    assert asha_rungs(10, 3, 100) == [10, 30, 90, 100]  # augs.yaml
    assert asha_rungs(1, 3, 10) == [1, 3, 9, 10]  # the search-efficiency protocol's surrogate
    assert asha_rungs(5, 2, 5) == [5]
    assert asha_milestones(1, 3.0, 10) == [1, 3, 9]


def test_a_fractional_milestone_is_compared_at_the_next_epoch():
    """grace 1, rf 2.5: milestones 1, 2.5, 6.25; Ray compares at epochs 1, 3 and 7."""
    assert asha_milestones(1, 2.5, 10) == [1, 2.5, 6.25]
    assert ray_recorded_epochs(1, 2.5, 10) == [1, 3, 7]
    assert asha_rungs(1, 2.5, 10) == [1, 3, 7, 10]
