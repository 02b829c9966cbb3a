"""Ray's OptunaSearch, made to keep the Optuna study truthful across ASHA and restarts.

Two gaps in ray 2.60's searcher (SPEC §5): it tells the study COMPLETE for every trial that ended with
a result, ASHA-stopped ones included; and after ``Tuner.restore`` the journal can be ahead of Ray's
snapshot, so reporting to a trial the study already closed raises. This subclass tells PRUNED when a
trial stopped before its epoch budget (intermediate values kept), FAIL on errors and non-finite
values, skips trials the study has already finished, and on restore closes study trials that Ray
never snapshotted (they will not come back) as FAIL.
"""

from __future__ import annotations

import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class StudySearch(OptunaSearch):
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
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if frozen._trial_id not in known:
                self._ot_study.tell(frozen.number, None, state=TrialState.FAIL)
