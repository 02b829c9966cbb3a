"""Parameter importance (fANOVA, PED-ANOVA) on the completed trials and at every ASHA rung.

At a rung, every trial that reached it counts with its kNN at that epoch, so pruned trials inform the
importance instead of only the few that ran their whole budget.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.search_space import intersection_search_space
from optuna.trial import TrialState

from analysis.load import Experiment

MIN_TRIALS = 4
EVALUATORS: dict[str, Callable[[], optuna.importance.BaseImportanceEvaluator]] = {
    "fanova": lambda: FanovaImportanceEvaluator(seed=0),
    "ped_anova": PedAnovaImportanceEvaluator,
}


def rung_study(exp: Experiment, epoch: int) -> optuna.Study:
    """An in-memory study of the trials that reached ``epoch``, valued by their kNN at that epoch."""
    frozen = {t.number: t for t in exp.study.get_trials(deepcopy=False)}
    reached = exp.table[exp.table[f"knn_e{epoch}"].notna() & exp.table["optuna_number"].isin(list(frozen))]
    study = optuna.create_study(direction=exp.study.direction)
    study.add_trials([
        optuna.trial.create_trial(params=frozen[n].params, distributions=frozen[n].distributions, value=v)
        for n, v in zip(reached["optuna_number"], reached[f"knn_e{epoch}"])
    ])
    return study


def _params(study: optuna.Study, evaluator: str) -> list[str]:
    """The parameters optuna would assess: fANOVA the intersection of all trials' spaces, PED-ANOVA
    every parameter of a completed trial (conditional ones included)."""
    if evaluator == "fanova":
        return sorted(intersection_search_space(study.get_trials(deepcopy=False)))
    return sorted({p for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   for p in t.distributions})


def importances(exp: Experiment) -> tuple[pd.DataFrame, list[str]]:
    """Rows (evaluator, rung, n_trials, param, importance, raw) and one line per skipped evaluation.

    ``importance`` is ``raw`` normalised to sum 1 per evaluator and rung (all zeros stay zeros, unlike
    optuna's own normalisation which turns them into a uniform split)."""
    scopes = {"complete": exp.study, **{f"e{r}": rung_study(exp, r) for r in exp.rungs
                                        if f"knn_e{r}" in exp.table}}
    rows, skipped = [], []
    for rung, study in scopes.items():
        scope = "completed trials" if rung == "complete" else f"rung {rung}"
        n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if n < MIN_TRIALS:
            skipped.append(f"{scope}: {n} trial(s) with a value, fewer than {MIN_TRIALS}")
            continue
        for name, make in EVALUATORS.items():
            params = _params(study, name)
            if not params:
                skipped.append(f"{scope}, {name}: no parameter to assess (none shared by all trials)"
                               if name == "fanova" else f"{scope}, {name}: no parameter")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PED-ANOVA warns on small regimes; the n is in the table
                raw = make().evaluate(study, params=params)
            total = sum(raw.values())
            rows += [{"evaluator": name, "rung": rung, "n_trials": n, "param": p, "raw": v,
                      "importance": v / total if total > 0 else 0.0} for p, v in raw.items()]
    columns = ["evaluator", "rung", "n_trials", "param", "importance", "raw"]
    return pd.DataFrame(rows, columns=columns), skipped
