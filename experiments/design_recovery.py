"""Does a ``sampler: design`` search, read with the design's own model, recover a planted truth with an
order effect?

    nice -n 10 python -m experiments.design_recovery run       # the searches, one at a time (~2 min each)
    python -m experiments.design_recovery score                # writes results/design_order/

Protocol (fixed before any of these searches was read): ``search_spaces/augs_design.yaml`` (``augs.yaml``
with ``sampler: design`` and ``replicates: 2``: 32 design points x 2 replicates = 64 trials) scored by
``search_spaces/truths/design_order.yaml`` (``--surrogate``), 8 epochs, ASHA grace 2 and reduction 2,
1 CPU per trial, sampler seeds 0, 1, 2. Read at the first rung, where every trial counts, from
``effects_adjusted.csv`` as ``python -m analysis`` writes it.

A search recovers the truth when every effect of the truth has its row with p_holm < 0.05 and the planted
sign (``mixback on``, ``op:<op> on``, and for ``before: [a, b]`` the row ``order:a,b`` or ``order:b,a``,
whose level names the op that runs first), and no *null* row has p_holm < 0.05. Null rows: an op's on/off
or an op pair's order when no effect names that op (pair) at all. The other rows significant at that
level (magnitudes, mix-back settings, order pairs of named ops) are listed, not counted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from analysis import stats
from analysis.load import load_experiment
from analysis.run import analyse
from experiments.common import RESULTS
from experiments.recovery import recovery_args, run_searches
from uclser_tune.search import surrogate
from uclser_tune.search.spaces import load_space

SPACE = Path("search_spaces/augs_design.yaml")
TRUTH = Path("search_spaces/truths/design_order.yaml")
SEEDS = [0, 1, 2]
SEARCH = ["--max-epochs", "8", "--grace-period", "2", "--reduction-factor", "2", "--cpus-per-trial", "1",
          "--gpus-per-trial", "0"]
RUNS = Path("runs/design_recovery")
OUT = RESULTS / "design_order"
ALPHA = 0.05


def planted_rows(truth: surrogate.Truth, candidates: list[str]) -> tuple[dict[tuple[str, str], float], set[str]]:
    """((factor, level) of effects_adjusted.csv → planted sign, every op any effect names)."""
    want: dict[tuple[str, str], float] = {}
    named: set[str] = set()
    for e in truth.effects:
        when = e.when or {}
        for key, value in when.items():
            if key == "op":
                named.add(value)
                if len(when) == 1:
                    want[(f"op:{value}", "on")] = np.sign(e.add)
            elif key == "before":
                named |= set(value)
                a, b = sorted(value, key=candidates.index)
                if len(when) == 1:
                    want[(f"order:{a},{b}", f"{a} before {b}")] = np.sign(e.add) * (1 if value[0] == a else -1)
            elif key == "views.mixback" and value is True and len(when) == 1:
                want[("mixback", "on")] = np.sign(e.add)
    return want, named


def is_null(factor: str, named: set[str]) -> bool:
    """An op's on/off or an op pair's order that no effect of the truth names."""
    if factor.startswith("op:"):
        return factor.removeprefix("op:") not in named
    if factor.startswith("order:"):
        return not set(factor.removeprefix("order:").split(",")) & named
    return False


def score(rows: pd.DataFrame, truth: surrogate.Truth, candidates: list[str]) -> dict:
    """One search's verdict from its effects_adjusted rows at the first scope."""
    first = rows[rows["scope"] == rows["scope"].iloc[0]].dropna(subset=["p_holm"])
    want, named = planted_rows(truth, candidates)
    found, misses = [], []
    for (factor, level), sign in want.items():
        hit = first[(first["factor"] == factor) & (first["level"] == level)]
        if len(hit) and hit["p_holm"].iloc[0] < ALPHA and np.sign(hit["estimate"].iloc[0]) == sign:
            r = hit.iloc[0]
            found.append(f"{factor} {level} {r.estimate:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] p_holm {r.p_holm:.2g}")
        else:
            misses.append(f"{factor} {level}")
    significant = first[first["p_holm"] < ALPHA]
    null = significant[[is_null(f, named) for f in significant["factor"]]]
    other = significant[[not is_null(f, named) and (f, lvl) not in want
                         for f, lvl in zip(significant["factor"], significant["level"])]]
    return {"ok": not misses and null.empty, "n": int(rows.iloc[0]["method"].split("n=")[1].split(",")[0]),
            "found": "; ".join(found), "missed": "; ".join(misses),
            "null_significant": "; ".join(f"{f} {lvl} p_holm {p:.2g}"
                                          for f, lvl, p in zip(null["factor"], null["level"], null["p_holm"])),
            "other_significant": "; ".join(f"{f} {lvl} p_holm {p:.2g}"
                                           for f, lvl, p in zip(other["factor"], other["level"], other["p_holm"])),
            "scope": first["scope"].iloc[0], "method": first["method"].iloc[0]}


def main(argv: list[str] | None = None) -> None:
    args = recovery_args(argv, __doc__, SEEDS)
    if args.what == "run":
        run_searches(RUNS, SPACE, [(f"s{seed}", TRUTH, seed) for seed in args.seeds], args.ip, SEARCH)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    truth, candidates = surrogate.load_truth(TRUTH), load_space(SPACE).candidates
    out = []
    for seed in args.seeds:
        exp_dir = RUNS / f"s{seed}"
        folder = OUT / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        analyse(exp_dir, folder)
        shutil.copy(exp_dir / "trials.parquet", folder / "trials.parquet")
        if seed != args.seeds[0]:  # the first seed's whole report; of the others their table and trials
            for f in folder.iterdir():
                if f.name not in ("effects_adjusted.csv", "trials.parquet"):
                    f.unlink()
        exp = load_experiment(exp_dir)
        counts = exp.table["status"].value_counts()
        rows = stats.effects_adjusted(exp)
        out.append({"seed": seed, "trials": len(exp.table),
                    "status": ", ".join(f"{k} {v}" for k, v in counts.items()), **score(rows, truth, candidates)})
    table = pd.DataFrame(out)
    table.to_csv(OUT / "recovery.csv", index=False)
    print(table[["seed", "trials", "ok", "missed", "null_significant"]].to_string(index=False))


if __name__ == "__main__":
    main()
