"""Ray's OptunaSearch, made to keep the Optuna study truthful across ASHA and restarts.

Two gaps in ray 2.60's searcher (SPEC §5): it tells the study COMPLETE for every trial that ended with
a result, ASHA-stopped ones included; and after ``Tuner.restore`` the journal can be ahead of Ray's
snapshot, so reporting to a trial the study already closed raises. This subclass tells PRUNED when a
trial stopped before its epoch budget (intermediate values kept), FAIL on errors and non-finite
values, and skips trials the study has already finished. A sampled search's first trials are a
balanced start-up design (``SearchSpace.startup_design``), enqueued with the fresh study.

Restore: Ray's experiment state, searcher state and generator state are separate files, copied into the
experiment dir while Ray goes on, so after a kill they can be from different moments. The experiment
state decides (``state.restored_trials``, given by the driver): the searcher maps Ray's restored trials to
study trials by the Optuna number in their config, closes every other RUNNING study trial FAIL (it will
not come back) and enqueues its cell again if it was an enqueued one (a design point or grid cell); the
generator counts only the restored trials, so Ray samples one in place of each lost trial, and a
concurrency limiter holds exactly the restored trials that run again (a lost trial left in it would hold
its slot for ever).

Grids: Optuna's GridSampler calls ``study.stop()`` once the grid is used up, which raises outside
``study.optimize`` and so errors the last trial. Instead every cell is enqueued once in a fresh study,
the searcher reports FINISHED when none is waiting, and on restore the cells left without a live or
finished-OK trial (FAIL, or closed FAIL on restore) are enqueued again, so a resumed grid completes.

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
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from uclser_tune.search.results import storage_from
from uclser_tune.search.state import RestoredTrial

LIVE = ("_storage", "_ot_study", "_ot_trials")  # re-opened on restore, never pickled
DONE_OR_LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def cells_to_rerun(cells: list[dict[str, Any]], trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Grid cells with no COMPLETE, PRUNED, RUNNING or WAITING trial (never run, or only FAILed)."""
    covered = {tuple(sorted(t.system_attrs.get("fixed_params", t.params).items()))
               for t in trials if t.state in DONE_OR_LIVE}
    return [cell for cell in cells if tuple(sorted(cell.items())) not in covered]


class StudySearchGenerator(SearchGenerator):
    """Ray's generator latches "the searcher said FINISHED" into its saved state; a restored grid must
    ask the study again (it may have cells to re-run), so the latch is not restored."""

    def set_state(self, state: dict) -> None:
        super().set_state({**state, "finished": False})

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        restored = StudySearch.restored_trials
        self._counter = len(restored)
        searcher = self.searcher
        while isinstance(searcher, ConcurrencyLimiter):
            searcher.live_trials = {tid for tid, trial in restored.items() if trial.live}
            searcher.num_unfinished_live_trials = len(searcher.live_trials)
            searcher = searcher.searcher


class StudySearch(OptunaSearch):
    # The experiment this driver runs. Ray restores the searcher from pickles written by the first
    # driver (tuner.pkl, searcher-state-*.pkl), which cannot know where the experiment lives now.
    experiment_dir: ClassVar[Path]
    # The trials of the Ray snapshot being restored, by Ray trial id (set by the driver before a restore).
    restored_trials: ClassVar[dict[str, RestoredTrial]] = {}

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
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self._storage = storage_from(self._storage_url, self.experiment_dir)
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        by_number = {t.number: t._trial_id for t in self._ot_study.get_trials(deepcopy=False)}
        restored = {tid: trial for tid, trial in self.restored_trials.items() if trial.optuna_number in by_number}
        self._ot_trials = {tid: optuna.Trial(self._ot_study, by_number[trial.optuna_number])
                           for tid, trial in restored.items()}
        live = {self._ot_trials[tid]._trial_id for tid, trial in restored.items() if trial.live}
        # WAITING trials are enqueued cells nobody has started: they stay in the queue
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in live:
                self._ot_study.tell(frozen.number, None, state=TrialState.FAIL)
                if "fixed_params" in frozen.system_attrs:
                    self._ot_study.enqueue_trial(frozen.system_attrs["fixed_params"])
        if self._grid_cells:
            for cell in cells_to_rerun(self._grid_cells, self._ot_study.get_trials(deepcopy=False)):
                self._ot_study.enqueue_trial(cell)
