"""Ray's OptunaSearch, made to keep the Optuna study truthful across ASHA and restarts.

Two gaps in ray 2.60's searcher (SPEC §5): it tells the study COMPLETE for every trial that ended with
a result, ASHA-stopped ones included; and after ``Tuner.restore`` the journal can be ahead of Ray's
snapshot, so reporting to a trial the study already closed raises. This subclass tells PRUNED when a
trial stopped before its epoch budget (intermediate values kept), FAIL on errors and non-finite
values, skips trials the study has already finished, and on restore closes study trials that Ray
never snapshotted (they will not come back) as FAIL.

Grids: Optuna's GridSampler calls ``study.stop()`` once the grid is used up, which raises outside
``study.optimize`` and so errors the last trial. Instead every cell is enqueued once in a fresh study,
the searcher reports FINISHED when none is waiting, and on restore the cells left without a live or
finished-OK trial (FAIL, or closed FAIL above) are enqueued again, so a resumed grid completes.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

DONE_OR_LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def cells_to_rerun(cells: list[dict[str, Any]], trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Grid cells with no COMPLETE, PRUNED, RUNNING or WAITING trial (never run, or only FAILed)."""
    covered = {tuple(sorted(t.params.items())) for t in trials if t.state in DONE_OR_LIVE}
    covered |= {tuple(sorted(t.system_attrs.get("fixed_params", {}).items()))
                for t in trials if t.state == TrialState.WAITING}
    return [cell for cell in cells if tuple(sorted(cell.items())) not in covered]


class StudySearchGenerator(SearchGenerator):
    """Ray's generator latches "the searcher said FINISHED" into its saved state; a restored grid must
    ask the study again (it may have cells to re-run), so the latch is not restored."""

    def set_state(self, state: dict) -> None:
        super().set_state({**state, "finished": False})


class StudySearch(OptunaSearch):
    def __init__(self, *args: Any, grid_cells: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        self._grid_cells = grid_cells or []
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: str) -> None:
        super()._setup_study(mode)
        if self._grid_cells and not self._ot_study.get_trials(deepcopy=False):
            for cell in self._grid_cells:
                self._ot_study.enqueue_trial(cell)

    def suggest(self, trial_id: str) -> dict | str | None:
        if (self._grid_cells and trial_id not in self._ot_trials
                and not self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
            return Searcher.FINISHED
        return super().suggest(trial_id)

    def _finished(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and not self._finished(trial_id) and self.metric in result:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        if self._finished(trial_id):
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(self.metric)
        step = (result or {}).get("training_iteration")
        stored = self._ot_study._storage.get_trial(ot_trial._trial_id).intermediate_values
        if value is not None and math.isfinite(value) and step is not None and step not in stored:
            ot_trial.report(value, step)  # a result the scheduler stopped on never reached on_trial_result
        if error or value is None or not math.isfinite(value):
            self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
        elif result.get("epoch", 0) < result.get("max_epochs", 0):
            self._ot_study.tell(ot_trial, None, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, value, state=TrialState.COMPLETE)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        known = {t._trial_id for t in self._ot_trials.values()}
        # WAITING trials are enqueued grid cells nobody has started: they stay in the queue
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                self._ot_study.tell(frozen.number, None, state=TrialState.FAIL)
        if self._grid_cells:
            for cell in cells_to_rerun(self._grid_cells, self._ot_study.get_trials(deepcopy=False)):
                self._ot_study.enqueue_trial(cell)
