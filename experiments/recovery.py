"""Does the analysis recover a planted truth? Four claims checked on a ``--surrogate`` experiment.

Each claim is read where every trial counts: the adjusted effects and fANOVA importance of the first
rung, and the experiment's ``best_config.yaml``. Effects of at least ``BIG`` noise sd are the ones the
claims are about; the sizes are in final-score units, the search's first rung reports them scaled by
the surrogate's curve, noise included, so the signal-to-noise ratio is the same.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import importance, stats
from analysis.load import Experiment, load_experiment
from uclser_tune.search import results, surrogate
from uclser_tune.search.spaces import load_space

BIG = 4.0  # an effect of at least this many noise sd must be recovered


@dataclass
class Claim:
    claim: str
    ok: bool
    detail: str


def first_scope(exp: Experiment) -> str:
    return stats.scopes(exp)[0][0]


def check(exp_dir: str | Path, truth_path: str | Path) -> list[Claim]:
    """The issue's four claims, each with what was found."""
    exp = load_experiment(exp_dir)
    truth = surrogate.load_truth(truth_path)
    space = load_space(exp.meta["space"])
    big = [i for i, e in enumerate(truth.effects) if abs(e.add) >= BIG * truth.noise_sd]
    claims = []

    found = results.load_best_config(exp.path)
    _, best = surrogate.best_achievable(truth, space, exp.meta["overrides"])
    got, want = surrogate.contributions(truth, found), surrogate.contributions(truth, best)
    missed = [i for i in big if got[i] < want[i] - 2 * truth.noise_sd]
    claims.append(Claim("best_config.yaml has the planted best level of every effect >= 4 noise sd", not missed,
                        "missed effects " + ", ".join(f"#{i} {truth.effects[i]}" for i in missed) if missed
                        else f"{len(big)} effects at their best level"))

    adjusted = stats.effects_adjusted(exp)
    first = adjusted[adjusted["scope"] == first_scope(exp)].set_index("factor")
    biggest = max(truth.effects, key=lambda e: abs(e.add))
    if biggest.when is not None and set(biggest.when) == {"views.mixback"}:
        rung = next(r for r in exp.rungs if f"knn_e{r}" in exp.table)
        rows, _ = importance.importances(exp)
        fanova = rows[(rows["evaluator"] == "fanova") & (rows["rung"] == f"e{rung}")].dropna(subset=["importance"])
        top = fanova.loc[fanova["importance"].idxmax(), "param"]
        claims.append(Claim("views.mixback ranked first by importance (it carries the largest effect)",
                            top == "views.mixback", f"fANOVA at e{rung} ranks {top} first"))

    planted_ops = {e.when["op"] for e in truth.effects if e.when and "op" in e.when} | {
        op for e in truth.effects if e.when and "before" in e.when for op in e.when["before"]}
    misses = []
    for i in big:
        e = truth.effects[i]
        if e.when is None or set(e.when) != {"op"}:
            continue
        row = first.loc[f"op:{e.when['op']}"] if f"op:{e.when['op']}" in first.index else None
        if row is None or not (row["p_holm"] < 0.05 and np.sign(row["estimate"]) == np.sign(e.add)):
            misses.append(f"op:{e.when['op']} (planted {e.add:+g}; "
                          + ("no row" if row is None else f"{row['estimate']:+.3f}, p_holm {row['p_holm']:.3g}") + ")")
    claims.append(Claim("every planted op effect >= 4 noise sd has p_holm < 0.05 with the right sign", not misses,
                        "; ".join(misses) or "all found"))

    nulls = first[first.index.str.startswith("op:") & ~first.index.str.removeprefix("op:").isin(planted_ops)]
    false = nulls[(nulls["ci_low"] > 0) | (nulls["ci_high"] < 0)]
    claims.append(Claim("at most one op without a planted effect has a CI excluding 0", len(false) <= 1,
                        f"{len(false)} of {len(nulls)}: " + ", ".join(false.index)))
    return claims


def table(claims: list[Claim]) -> str:
    return pd.DataFrame([c.__dict__ for c in claims]).to_markdown(index=False)


def run_searches(runs: Path, space: Path, jobs: list[tuple[str, Path, int]], ip: str, search: list[str]) -> None:
    """Run the ``--surrogate`` searches ``(name, truth, seed)`` into ``runs`` that have no trials.parquet
    yet, one after another, printing each exit; a failed one prints its stderr and the next goes on."""
    for name, truth, seed in jobs:
        if (runs / name / "trials.parquet").exists():
            continue
        cmd = [sys.executable, "-m", "uclser_tune.search", "--space", str(space), "--surrogate", str(truth),
               "--seed", str(seed), "--name", name, "--storage-path", str(runs), "--node-ip-address", ip, *search]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "RAY_memory_monitor_refresh_ms": "0"})
        print(f"{name}: exit {done.returncode}", flush=True)
        if done.returncode:
            print(done.stderr[-2000:], flush=True)


def recovery_args(argv: list[str] | None, doc: str | None, seeds: list[int]) -> argparse.Namespace:
    """The command line of a recovery protocol: ``run`` its searches or ``score`` them, over ``--seeds``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "score"])
    p.add_argument("--seeds", type=int, nargs="+", default=seeds)
    p.add_argument("--ip", default="127.0.0.2", help="the loopback address of the searches' Ray")
    return p.parse_args(argv)
