"""Which readings of a search can be trusted? Each importance evaluator and the adjusted effects, run
against the planted truths, across sampler seeds.

    nice -n 10 python -m experiments.evaluator_recovery run     # the searches, one at a time (~1 min each)
    python -m experiments.evaluator_recovery score              # writes results/evaluator_recovery/

Protocol (fixed before any of these searches was read): ``augs.yaml`` as shipped (balanced start-up
design, then TPE) with ``--surrogate`` for every ``search_spaces/truths/augs_*.yaml``, 48 trials, 8
epochs, ASHA grace 2 and reduction 2, 1 CPU per trial, TPE seeds 0-4. Everything is read at the first
rung, where every trial counts.

A planted effect is *required* when it is at least ``recovery.BIG`` (4) noise sd and its condition is
one sampled parameter (``views.mixback`` or an op being on). A parameter is *planted* when any effect
names it (an op in a ``before`` pair, a peak's key, a second key of a condition), *null* otherwise.

- An importance evaluator recovers the planted ranking in a search when its k highest-ranked
  parameters (k = number of required effects) are exactly the required ones and the largest planted
  effect ranks first. A required parameter the evaluator did not assess (n/a) is a miss.
- The adjusted effects recover it when every required effect has p_holm < 0.05 with the planted sign
  and no null factor has p_holm < 0.05.

``recovery.csv`` holds one row per (truth, seed, reading); the report prints a reading only when it
recovered the planted truth in at least ``analysis.trust.TRUSTED`` of the searches, and says how often it did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from analysis import importance, stats, trust
from analysis.load import load_experiment
from experiments.common import RESULTS
from experiments.recovery import recovery_args, run_searches
from uclser_tune.search import surrogate

SPACE = Path("search_spaces/augs.yaml")
TRUTHS = sorted(Path("search_spaces/truths").glob("augs_*.yaml"))
SEEDS = [0, 1, 2, 3, 4]
SEARCH = ["--num-samples", "48", "--max-epochs", "8", "--grace-period", "2", "--reduction-factor", "2",
          "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
RUNS = Path("runs/evaluator_recovery")
OUT = RESULTS / "evaluator_recovery"
RATES = OUT / "recovery.csv"
BIG = 4.0


def _param_of(key: str) -> str:
    """The Optuna parameter (or position) a truth key refers to: ``views.op_params.noise.sigma_max`` is
    ``noise_sigma_max``; config keys are their own parameter names."""
    if key.startswith("views.op_params."):
        op, name = key.removeprefix("views.op_params.").split(".", 1)
        return f"{op}_{name}"
    return key


def planted(truth: surrogate.Truth) -> tuple[dict[str, float], set[str]]:
    """(required parameter → planted effect, every parameter or factor any effect names)."""
    required: dict[str, float] = {}
    named: set[str] = set()
    for e in truth.effects:
        when = e.when or {}
        for key, value in when.items():
            if key == "op":
                named |= {f"use_{value}", f"op:{value}"}
            elif key == "before":
                named |= {n for op in value for n in (f"use_{op}", f"op:{op}", f"position:{op}")}
            else:
                named |= {key, key.removeprefix("views.")}
        if e.peak is not None:
            named |= {_param_of(e.peak["key"]), _param_of(e.peak["key"]).removeprefix("views.")}
        if abs(e.add) >= BIG * truth.noise_sd and len(when) == 1:
            key, value = next(iter(when.items()))
            if key == "op":
                required[f"use_{value}"] = e.add
            elif key == "views.mixback" and value is True:
                required[key] = e.add
    return required, named


def _factor(param: str) -> str:
    """The adjusted-effects factor of a required parameter."""
    return f"op:{param.removeprefix('use_')}" if param.startswith("use_") else param.removeprefix("views.")


def score(exp_dir: Path, truth_path: Path) -> list[dict]:
    """One row per reading: did it recover the planted truth in this search, and what it found."""
    exp = load_experiment(exp_dir)
    truth = surrogate.load_truth(truth_path)
    required, named = planted(truth)
    largest = max(required, key=lambda p: abs(required[p]))
    rung = f"e{next(r for r in exp.rungs if f'knn_e{r}' in exp.table)}"
    rows, _ = importance.importances(exp)
    out = []
    for evaluator, part in rows[rows["rung"] == rung].groupby("evaluator", sort=False):
        ranked = list(part.dropna(subset=["importance"]).sort_values("importance", ascending=False)["param"])
        top = ranked[: len(required)]
        ok = bool(ranked) and set(top) == set(required) and ranked[0] == largest
        out.append({"reading": evaluator, "ok": ok, "detail": f"top {len(top)} at {rung}: {', '.join(top)}"})
    adjusted = stats.effects_adjusted(exp)
    first = adjusted[adjusted["scope"] == stats.scopes(exp)[0][0]].dropna(subset=["p_holm"])
    by = {f: r for f, r in first.groupby("factor")}
    misses = [p for p, add in required.items()
              if _factor(p) not in by or not ((by[_factor(p)]["p_holm"] < 0.05)
                                              & (np.sign(by[_factor(p)]["estimate"]) == np.sign(add))).any()]
    null = first[~first["factor"].isin(named) & (first["p_holm"] < 0.05)]
    out.append({"reading": trust.ADJUSTED, "ok": not misses and null.empty,
                "detail": "; ".join([*(f"missed {_factor(p)}" for p in misses),
                                     *(f"null {f} p_holm {p:.3g}" for f, p in zip(null["factor"], null["p_holm"]))])
                or "all required found, no null factor significant"})
    return [{"truth": truth_path.stem, **r} for r in out]


def rates(path: Path = RATES) -> dict[str, tuple[int, int]] | None:
    """reading → (searches recovered, searches) from the committed table; None when it is missing."""
    if not path.exists():
        return None
    table = pd.read_csv(path)
    return {k: (int(g["ok"].sum()), len(g)) for k, g in table.groupby("reading", sort=False)}


def main(argv: list[str] | None = None) -> None:
    args = recovery_args(argv, __doc__, SEEDS)
    if args.what == "run":
        run_searches(RUNS, SPACE, [(f"{t.stem}_s{seed}", t, seed) for seed in args.seeds for t in TRUTHS],
                     args.ip, SEARCH)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [{"seed": seed, **r} for seed in args.seeds for truth in TRUTHS
            if (RUNS / f"{truth.stem}_s{seed}" / "trials.parquet").exists()
            for r in score(RUNS / f"{truth.stem}_s{seed}", truth)]
    table = pd.DataFrame(rows).sort_values(["reading", "truth", "seed"], kind="stable")
    OUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(RATES, index=False)
    print(table.groupby("reading")["ok"].agg(["sum", "count"]).to_string())


if __name__ == "__main__":
    main()
