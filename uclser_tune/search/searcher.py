"""The search's Ray searcher: an Optuna study driven through ask and tell, kept truthful across ASHA and restarts.

``StudySearch`` is a plain ``ray.tune.search.Searcher`` (Ray's documented interface for custom search
algorithms: ``suggest``, ``on_trial_result``, ``on_trial_complete``, ``save``, ``restore``) that owns
one Optuna study and talks to it only through Optuna's ask-and-tell interface (``Study.ask``,
``Trial.report``, ``Study.tell``, ``Study.enqueue_trial``, ``Study.get_trials``, ``optuna.load_study``).

What the study records:
- Every Ray trial is one study trial, its number in the trial's config (``optuna_number``); the Ray
  trial id is a user attribute of the study trial (``ray_trial_id``).
- Each epoch's kNN is an intermediate value. A trial that stopped before its epoch budget (ASHA) is
  PRUNED, one that ran its budget is COMPLETE, an error or a non-finite kNN is FAIL.
- A sampled search's first trials are a balanced start-up design (``SearchSpace.startup_design``),
  enqueued in the fresh study. A grid or design enqueues every cell once and the searcher reports
  FINISHED when none is waiting: Optuna's GridSampler would call ``study.stop()`` when the grid is used
  up, which raises outside ``study.optimize``.

Restore: Ray's experiment state, searcher state and generator state are separate files, copied into
the experiment dir while Ray goes on, so after a kill they can be from different moments, and the
study (written at once) can be ahead of all of them. The experiment state decides
(``state.restored_trials``, given by the driver): the searcher maps Ray's restored trials to study
trials by the Optuna number in their config, closes every other RUNNING study trial FAIL (it will not
come back), and enqueues its cell again if it was an enqueued one (a design point or grid cell); a
restored grid enqueues again every cell left without a live or finished-OK trial, so it completes.
The searcher's concurrency slots are held by exactly the restored trials that run again, and the
generator (``StudySearchGenerator``) counts only the restored trials, so Ray samples one in place of
each lost trial.

Concurrency: the searcher limits the trials running at once itself (``max_concurrent``; ``suggest``
returns None when all slots are held), instead of Ray's ``ConcurrencyLimiter``, whose saved set of live
trials comes from the generator's snapshot: restored from an older snapshot than the experiment
state, it can lack a trial that runs again, and it drops the end of a trial it does not hold, so the
searcher would never close that trial. (For a ``ConcurrencyLimiter`` that Ray puts around the searcher,
for ``TuneConfig(max_concurrent_trials=...)``, the generator frees on restore the slots of trials that
will not run again.)

Moved experiments: Ray pickles the searcher (``tuner.pkl`` and the searcher state), so a pickle that
held the study's storage would keep the journal's absolute path from when the search began, and a
copied experiment would write into the original's study. The pickle holds the storage URL only
(``journal:<file>`` is relative); the study is opened from it in the experiment dir the driver names.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher, SearchGenerator

from uclser_tune.search.results import storage_from
from uclser_tune.search.state import RestoredTrial

DONE_OR_LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
RAY_ID = "ray_trial_id"  # user attribute of a study trial: the Ray trial it runs as


def cells_to_rerun(cells: list[dict[str, Any]], trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Grid cells with no COMPLETE, PRUNED, RUNNING or WAITING trial (never run, or only FAILed). An
    enqueued trial covers the cell it was enqueued with (Optuna keeps it as ``fixed_params``) even where
    it sampled further params beside it."""
    covered = {tuple(sorted(t.system_attrs.get("fixed_params", t.params).items()))
               for t in trials if t.state in DONE_OR_LIVE}
    return [cell for cell in cells if tuple(sorted(cell.items())) not in covered]


def reattach(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.Trial:
    """The ``Trial`` of a RUNNING study trial, by number, for a driver that did not ask it (a restarted one).

    Optuna's public API hands out a ``Trial`` only from ``Study.ask`` (and ``optimize``), and a trial
    number is not its storage id when a database holds several studies. The id comes from the storage's
    own lookup (``BaseStorage.get_study_id_from_name``, ``get_trial_id_from_study_id_trial_number``,
    the interface every Optuna storage implements), and ``Trial(study, trial_id)`` is Optuna's
    documented constructor. ``tests/test_searcher.py`` checks it on a storage shared by two studies."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


@dataclass
class Link:
    """The open study of a searcher and its trials still running: live objects, never pickled."""

    storage: optuna.storages.BaseStorage
    study: optuna.Study
    running: dict[str, optuna.Trial] = field(default_factory=dict)  # open study trials, by Ray trial id
    live: set[str] = field(default_factory=set)  # Ray trials holding a slot: asked and not ended, or restored
    reported: dict[str, set[int]] = field(default_factory=dict)  # steps with an intermediate value


class StudySearch(Searcher):
    """A Ray searcher backed by one Optuna study (see the module's docstring)."""

    # The experiment this driver runs. Ray restores the searcher from pickles written by the first
    # driver (tuner.pkl, searcher-state-*.pkl), which cannot know where the experiment lives now.
    experiment_dir: ClassVar[Path]
    # The trials of the Ray snapshot being restored, by Ray trial id (set by the driver before a restore).
    restored_trials: ClassVar[dict[str, RestoredTrial]] = {}

    def __init__(self, space: Callable[[optuna.Trial], dict[str, Any]], *, metric: str, mode: str,
                 sampler: optuna.samplers.BaseSampler, storage_url: str, study_name: str,
                 grid_cells: list[dict[str, Any]] | None = None, startup: list[dict[str, Any]] | None = None,
                 max_concurrent: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.max_concurrent = max_concurrent  # trials running at once (None: as Ray's resources allow)
        self.space = space  # define-by-run: suggests every param on the trial, returns the trial's config
        self.sampler = sampler
        self.storage_url = storage_url
        self.study_name = study_name
        self.grid_cells = grid_cells or []
        self.startup = startup or []
        self.link: Link | None = None
        self.connect()

    # the names Ray's OptunaSearch gave these, which callers of the searcher read
    @property
    def _ot_study(self) -> optuna.Study:
        return self.connect().study

    @property
    def _sampler(self) -> optuna.samplers.BaseSampler:
        return self.sampler

    def connect(self) -> Link:
        """The open study; opened (created if new, its cells enqueued) in ``experiment_dir`` on first use."""
        if self.link is None:
            storage = storage_from(self.storage_url, self.experiment_dir, driver=True)
            study = optuna.create_study(storage=storage, sampler=self.sampler, pruner=optuna.pruners.NopPruner(),
                                        study_name=self.study_name, load_if_exists=True,
                                        direction="minimize" if self.mode == "min" else "maximize")
            if not study.get_trials(deepcopy=False):  # a fresh study: a resumed one keeps its queue
                for cell in self.grid_cells or self.startup:
                    study.enqueue_trial(cell)
            self.link = Link(storage, study)
        return self.link

    def suggest(self, trial_id: str) -> dict | str | None:
        link = self.connect()
        if self.max_concurrent and len(link.live) >= self.max_concurrent:
            return None  # Ray asks again when a trial ends
        if self.grid_cells and not link.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return Searcher.FINISHED
        trial = link.study.ask()
        config = self.space(trial)
        trial.set_user_attr(RAY_ID, trial_id)
        link.live.add(trial_id)
        link.running[trial_id] = trial
        link.reported[trial_id] = set()
        return {**trial.params, **config}

    def report(self, trial_id: str, value: float, step: int) -> None:
        """The trial's intermediate value at ``step``, unless the study has one there already."""
        link = self.connect()
        if step not in link.reported[trial_id]:
            link.running[trial_id].report(value, step)
            link.reported[trial_id].add(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.connect().running and self.metric in result:
            self.report(trial_id, result[self.metric], result["training_iteration"])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        link = self.connect()
        link.live.discard(trial_id)
        if trial_id not in link.running:  # not this search's, or closed already (also by a previous driver)
            return
        value = (result or {}).get(self.metric)
        step = (result or {}).get("training_iteration")
        finite = value is not None and math.isfinite(value)
        if finite and step is not None:
            self.report(trial_id, value, step)  # a result the scheduler stopped on never reached on_trial_result
        trial = link.running.pop(trial_id)
        del link.reported[trial_id]
        if error or not finite:
            link.study.tell(trial, None, state=TrialState.FAIL, skip_if_finished=True)
        elif result.get("epoch", 0) < result.get("max_epochs", 0):
            link.study.tell(trial, None, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            link.study.tell(trial, value, state=TrialState.COMPLETE, skip_if_finished=True)

    def ray_trial_ids(self) -> set[str]:
        """The Ray trial ids of every study trial this search asked (in any driver session)."""
        return {t.user_attrs[RAY_ID] for t in self.connect().study.get_trials(deepcopy=False) if RAY_ID in t.user_attrs}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "link"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, link=None)  # the study is opened where the experiment is now

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))
        link = self.connect()
        study = link.study
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        # Ray's trials that run again, by the number of their study trial
        live = {tid: trial.optuna_number for tid, trial in self.restored_trials.items()
                if trial.live and trial.optuna_number in by_number}
        link.live = {tid for tid, trial in self.restored_trials.items() if trial.live}
        live_numbers = set(live.values())
        # WAITING trials are enqueued cells nobody has started: they stay in the queue
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in live_numbers:
                study.tell(frozen.number, None, state=TrialState.FAIL)
                if "fixed_params" in frozen.system_attrs:
                    study.enqueue_trial(frozen.system_attrs["fixed_params"])
        for tid, number in live.items():
            if by_number[number].state == TrialState.RUNNING:  # the study may have closed it before the kill
                link.running[tid] = reattach(study, link.storage, number)
                link.reported[tid] = set(by_number[number].intermediate_values)
        if self.grid_cells:
            for cell in cells_to_rerun(self.grid_cells, study.get_trials(deepcopy=False)):
                study.enqueue_trial(cell)


class StudySearchGenerator(SearchGenerator):
    """Ray's generator, restored to follow the restored experiment state rather than its own snapshot."""

    def set_state(self, state: dict) -> None:
        """Ray calls this only to restore the generator's snapshot (``search_gen_state-*.json``). Two of its
        values must follow the restored experiment state instead, and Ray's public interface has no
        setter for either, so they are replaced in the snapshot's dict (the keys of
        ``SearchGenerator.get_state``, checked by ``tests/test_searcher.py``):
        - ``counter``, the trials created, counts only the restored ones, so that Ray samples a new trial
          in place of each lost one and the search still runs ``num_samples``;
        - ``finished``, "the searcher said FINISHED", is not kept: a restored grid must ask its study
          again (it may have failed cells to re-run)."""
        super().set_state({**state, "counter": len(StudySearch.restored_trials), "finished": False})

    def restore_from_dir(self, dirpath: str) -> None:
        """Also frees, in a ``ConcurrencyLimiter`` around the searcher, the slot of every trial that will not
        run again (lost, or finished before the kill): a trial left in it would hold its slot for ever.
        The limiter's ``on_trial_complete`` frees a slot; the ids come from the study."""
        super().restore_from_dir(dirpath)
        searcher = self.searcher
        while not isinstance(searcher, StudySearch):
            searcher = searcher.searcher
        live = {tid for tid, trial in StudySearch.restored_trials.items() if trial.live}
        for trial_id in sorted(searcher.ray_trial_ids() - live):
            self.searcher.on_trial_complete(trial_id, error=True)
