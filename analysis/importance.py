"""Parameter importance (fANOVA, PED-ANOVA) per scope: the completed trials and every ASHA rung.

At a rung, every trial that reached it counts with its kNN at that epoch, so pruned trials inform the
importance instead of only the few that ran their whole budget; the first rung holds every trial.
Order is read as op positions (``position:<op>``: 1 = applied first, only while the op is on), not as
the Lehmer digits the sampler draws, whose meaning depends on the digits before them.

Every parameter of the study gets a row per evaluator and scope. One an evaluator did not assess is
n/a (importance empty, ``note`` says why), never zero: fANOVA only assesses the parameters every trial
has, so conditional ones (magnitudes, mix-back α, positions) are n/a there. PED-ANOVA runs only when
its top quantile holds at least MIN_TOP trials (Optuna asks for that many), and its warnings are kept
as notes. The ranking's stability is the fANOVA ranking over bootstrap resamples of the trials of
the first rung.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import IntDistribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.search_space import intersection_search_space

from analysis.load import Experiment

MIN_TRIALS = 4
PED_QUANTILE = 0.1  # Optuna's default target quantile
MIN_TOP = 5  # trials PED-ANOVA needs in its top quantile
BOOTSTRAP = 20  # resamples for the stability of the fANOVA ranking
COLUMNS = ["evaluator", "rung", "n_trials", "param", "importance", "raw", "note"]
EVALUATORS: dict[str, Callable[[int], optuna.importance.BaseImportanceEvaluator]] = {
    "fanova": lambda seed: FanovaImportanceEvaluator(seed=seed),
    "ped_anova": lambda seed: PedAnovaImportanceEvaluator(target_quantile=PED_QUANTILE),
}


def _positions(row: pd.Series, n_ops: int) -> dict[str, tuple[int, IntDistribution]]:
    return {f"position:{c.removeprefix('pos_')}": (int(row[c]), IntDistribution(1, n_ops))
            for c in row.index if c.startswith("pos_") and row[c] > 0}


def scope_study(exp: Experiment, metric: str, rows: pd.DataFrame | None = None) -> optuna.Study:
    """An in-memory study of the trials with a ``metric`` value (or of ``rows``), valued by it; order
    digits replaced by op positions."""
    frozen = {t.number: t for t in exp.study.get_trials(deepcopy=False)}
    rows = exp.table if rows is None else rows
    rows = rows[rows[metric].notna() & rows["optuna_number"].isin(list(frozen))]
    n_ops = sum(c.startswith("pos_") for c in exp.table.columns)
    study = optuna.create_study(direction=exp.study.direction)
    trials = []
    for _, row in rows.iterrows():
        t = frozen[row["optuna_number"]]
        keep = {k: v for k, v in t.params.items() if not k.startswith("order_")}
        pos = _positions(row, n_ops) if any(k.startswith("order_") for k in t.params) else {}
        trials.append(optuna.trial.create_trial(
            params={**keep, **{k: v for k, (v, _) in pos.items()}},
            distributions={**{k: t.distributions[k] for k in keep}, **{k: d for k, (_, d) in pos.items()}},
            value=float(row[metric])))
    study.add_trials(trials)
    return study


def scopes(exp: Experiment) -> dict[str, optuna.Study]:
    """"complete" (last epoch of COMPLETE trials) and "e<r>" per rung."""
    done = exp.table[exp.table["status"] == "COMPLETE"]
    return {"complete": scope_study(exp, "last_knn", done),
            **{f"e{r}": scope_study(exp, f"knn_e{r}") for r in exp.rungs if f"knn_e{r}" in exp.table}}


def all_params(study: optuna.Study) -> list[str]:
    return sorted({p for t in study.get_trials(deepcopy=False) for p in t.distributions})


def assessed(study: optuna.Study, evaluator: str) -> list[str]:
    """What optuna assesses: fANOVA the parameters every trial has, PED-ANOVA every parameter."""
    if evaluator == "fanova":
        return sorted(intersection_search_space(study.get_trials(deepcopy=False)))
    return all_params(study)


def _evaluate(study: optuna.Study, evaluator: str, params: list[str], seed: int = 0) -> tuple[dict[str, float], list[str]]:
    """Raw importances and the evaluator's warnings; no importances (and the reason) when it cannot fit,
    e.g. fANOVA on trials that all have the same value."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = EVALUATORS[evaluator](seed).evaluate(study, params=params)
        except RuntimeError as err:
            return {}, [f"failed: {err}"]
    return raw, sorted({str(w.message) for w in caught})


def importances(exp: Experiment) -> tuple[pd.DataFrame, list[str]]:
    """Rows (evaluator, rung, n_trials, param, importance, raw, note) and one line per skipped evaluation
    or evaluator warning. ``importance`` is ``raw`` normalised to sum 1 over the assessed parameters
    (all zeros stay zeros, unlike optuna's normalisation); NaN with a note where not assessed."""
    rows, skipped = [], []
    for rung, study in scopes(exp).items():
        scope = "completed trials" if rung == "complete" else f"rung {rung}"
        n = len(study.trials)
        if n < MIN_TRIALS:
            skipped.append(f"{scope}: {n} trial(s) with a value, fewer than {MIN_TRIALS}")
            continue
        names = all_params(study)
        for evaluator in EVALUATORS:
            params = assessed(study, evaluator)
            n_top = math.ceil(PED_QUANTILE * n)
            why = ("not in every trial (fANOVA assesses only the parameters all trials share)"
                   if evaluator == "fanova" else "")
            if evaluator == "ped_anova" and n_top < MIN_TOP:
                params, why = [], (f"PED-ANOVA not run: its top {PED_QUANTILE:.0%} holds {n_top} trial(s), "
                                   f"fewer than {MIN_TOP}")
                skipped.append(f"{scope}, {why}")
            raw, notes = _evaluate(study, evaluator, params) if params else ({}, [])
            skipped += [f"{scope}, {evaluator}: {w}" for w in notes]
            why = why if raw or not notes else notes[-1]
            total = sum(raw.values())
            rows += [{"evaluator": evaluator, "rung": rung, "n_trials": n, "param": p,
                      "raw": raw.get(p, np.nan),
                      "importance": (raw[p] / total if total > 0 else 0.0) if p in raw else np.nan,
                      "note": "" if p in raw else f"n/a: {why}"} for p in names]
    return pd.DataFrame(rows, columns=COLUMNS), skipped


def stability(exp: Experiment, resamples: int | None = None) -> pd.DataFrame | None:
    """fANOVA on bootstrap resamples of the first rung's trials (every trial that reached it): per
    parameter the median importance, its 5-95 % range and how often it ranks first (``resamples``
    defaults to BOOTSTRAP). None when the
    first rung has fewer than MIN_TRIALS trials or no parameter all trials share."""
    first = next((r for r in exp.rungs if f"knn_e{r}" in exp.table), None)
    if first is None:
        return None
    part = exp.table[exp.table[f"knn_e{first}"].notna()].reset_index(drop=True)
    study = scope_study(exp, f"knn_e{first}", part)
    params = assessed(study, "fanova")
    if len(study.trials) < MIN_TRIALS or not params:
        return None
    resamples = resamples or BOOTSTRAP
    rng = np.random.default_rng(0)
    draws = []
    for b in range(resamples):
        sample = part.iloc[rng.integers(0, len(part), len(part))]
        boot = scope_study(exp, f"knn_e{first}", sample)
        boot_params = [p for p in params if p in intersection_search_space(boot.get_trials(deepcopy=False))]
        raw, _ = _evaluate(boot, "fanova", boot_params, seed=b)
        if raw:  # a resample whose trials all have one value has no ranking
            total = sum(raw.values()) or 1.0
            draws.append({p: raw.get(p, 0.0) / total for p in params})
    if not draws:
        return None
    frame = pd.DataFrame(draws)
    resamples = len(draws)
    top = frame.idxmax(axis=1).value_counts()
    return pd.DataFrame({"rung": f"e{first}", "param": params, "resamples": resamples,
                         "median": frame.median().reindex(params).to_numpy(),
                         "q05": frame.quantile(0.05).reindex(params).to_numpy(),
                         "q95": frame.quantile(0.95).reindex(params).to_numpy(),
                         "share_ranked_first": [top.get(p, 0) / resamples for p in params]}
                        ).sort_values("median", ascending=False, ignore_index=True)
