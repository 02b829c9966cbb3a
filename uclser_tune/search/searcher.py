"""Ray's OptunaSearch, made to keep the Optuna study truthful across ASHA and restarts.

Two gaps in ray 2.60's searcher (SPEC §5): it tells the study COMPLETE for every trial that ended with
a result, ASHA-stopped ones included; and after ``Tuner.restore`` the journal can be ahead of Ray's
snapshot, so reporting to a trial the study already closed raises. This subclass tells PRUNED when a
trial stopped before its epoch budget (intermediate values kept), FAIL on errors and non-finite
values, skips trials the study has already finished, and on restore closes study trials that Ray
never snapshotted (they will not come back) as FAIL. A sampled search's first trials are a balanced
start-up design (``SearchSpace.startup_design``), enqueued with the fresh study.

Grids: Optuna's GridSampler calls ``study.stop()`` once the grid is used up, which raises outside
``study.optimize`` and so errors the last trial. Instead every cell is enqueued once in a fresh study,
the searcher reports FINISHED when none is waiting, and on restore the cells left without a live or
finished-OK trial (FAIL, or closed FAIL above) are enqueued again, so a resumed grid completes.

Moved experiments: Ray pickles the searcher, and OptunaSearch's pickle holds its study and storage, so
the journal would stay named by the absolute path it had when the search began and a copied experiment
would write into the original's study. Here the snapshot holds no storage; ``restore`` re-opens the
study from the storage URL (``journal:<file>`` is relative) in the experiment dir the driver names.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from uclser_tune.search.results import storage_from

LIVE = ("_storage", "_ot_study", "_ot_trials")  # re-opened on restore, never pickled
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
    # The experiment this driver runs. Ray restores the searcher from pickles written by the first
    # driver (tuner.pkl, searcher-state-*.pkl), which cannot know where the experiment lives now.
    experiment_dir: ClassVar[Path]

    def __init__(self, *args: Any, storage_url: str, grid_cells: list[dict[str, Any]] | None = None,
                 startup: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        self._storage_url = storage_url
        self._grid_cells = grid_cells or []
        self._startup = startup or []
        super().__init__(*args, storage=storage_from(storage_url, self.experiment_dir), **kwargs)

    def _setup_study(self, mode: str) -> None:
        super()._setup_study(mode)
        if not self._ot_study.get_trials(deepcopy=False):  # a fresh study: a resumed one keeps its queue
            for cell in self._grid_cells or self._startup:
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

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k not in LIVE}
        state["_ot_trial_ids"] = {tid: t._trial_id for tid, t in self._ot_trials.items()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        ids = state.pop("_ot_trial_ids")
        self.__dict__.update(state)
        self._storage = storage_from(self._storage_url, self.experiment_dir)
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        self._ot_trials = {tid: optuna.Trial(self._ot_study, ot_id) for tid, ot_id in ids.items()}
        known = {t._trial_id for t in self._ot_trials.values()}
        # WAITING trials are enqueued grid cells nobody has started: they stay in the queue
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                self._ot_study.tell(frozen.number, None, state=TrialState.FAIL)
        if self._grid_cells:
            for cell in cells_to_rerun(self._grid_cells, self._ot_study.get_trials(deepcopy=False)):
                self._ot_study.enqueue_trial(cell)
