"""Search efficiency: trial-epochs TPE + ASHA needs to get within 0.01 of the best full-budget score,
against full-budget random search and full-budget TPE, with the project's real driver.

    nice -n 5 python -m experiments.search_efficiency --set surrogate --parallel 6 --survival 1 8  # ~50 min here
    nice -n 5 python -m experiments.search_efficiency --set small       # real training, small set, 1 seed, CPU

Every search is ``python -m uclser_tune.search`` on ``augs.yaml``. The methods differ only in the space
file's ``sampler`` and ``asha`` (the driver has no flag for either): the script writes one copy of the
space per method next to its results (``spaces/``), so the three searches are the same space.

- ``tpe_asha``: TPE (the space's sampler) + Ray's ASHA; ``random_full``: Optuna's random sampler, every
  trial at the full epoch budget; ``tpe_full``: TPE, full budget.
- Target: the best full-budget score - 0.01. On the surrogate (``--surrogate TRUTH.yaml``) the best
  full-budget score is ``best_achievable`` (the best noiseless final score any trial of the space can
  get); on the real set it is unknown, so it is the best final score of any full-budget trial of any
  method and seed in this benchmark.
- Trial-epochs to target: trials in order of completion (the Optuna study's ``datetime_complete``),
  their epochs summed up to and including the first full-budget trial whose final score reaches the
  target. Trials still running at that moment are not counted (at most ``max_concurrent - 1`` trials,
  for every method alike). A search that never reaches it reports ``reached = False`` and all of its
  trial-epochs (a lower bound). On the surrogate the target is known before the search, so each search
  is stopped once a full-budget trial has reached it.

Outputs per set in ``--out/<set>/``: ``search_efficiency.csv`` (method, seed, trial_epochs_to_target,
reached, best_score), ``rung_survival.csv`` and ``summary.md``. The ASHA rung survival compares the
share of trials reaching each rung with ``1/reduction_factor^k`` (synchronous successive halving) and
with Ray's asynchronous rule replayed on the trials' own scores (``replay_asha``) and on i.i.d. scores
(the asynchrony alone). ``--survival`` adds TPE + ASHA and random + ASHA searches at other
``max_concurrent`` values on the surrogate.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import math
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from analysis.load import asha_milestones, asha_rungs
from uclser_tune.evaluation.stats import holm
from uclser_tune.search.results import META_FILE, open_study, trials_table

SPACE = Path("search_spaces/augs.yaml")
TRUTH = Path("search_spaces/truths/augs_mixback.yaml")
TOLERANCE = 0.01
ATTEMPTS = 3
SURVIVAL_TRIALS = 100  # trials of each --survival search (run to the end)
# Ray's memory monitor kills trial workers when the machine (shared with other jobs) is above 95 % of its
# memory, which failed whole surrogate searches (trials of a few MB); the surrogate cannot cause it
RAY_ENV = {"RAY_memory_monitor_refresh_ms": "0"}
POLL_S = 15  # seconds between looks at a running search
METHODS = {"tpe_asha": ("tpe", True), "random_full": ("random", False), "tpe_full": ("tpe", False)}
SURVIVAL_METHODS = {"random_asha": ("random", True)}
SMALL = ["--data", "synthetic", "--config", "cpu_small.yaml"]  # the shipped CPU setting


@dataclass(frozen=True)
class Protocol:
    """Budget of one set, fixed before any search ran: epochs, ASHA, trials per method, seeds."""
    max_epochs: int
    grace_period: int
    reduction_factor: float
    trials_full: int  # trials of a full-budget search
    trials_asha: int  # trials of a TPE + ASHA search (each costs less)
    seeds: tuple[int, ...]
    max_concurrent: int
    cpus_per_trial: float
    driver_args: tuple[str, ...]


# surrogate: augs.yaml's own ASHA schedule (100 epochs, grace 10, reduction 3) scaled by 1/10;
# small: what fits the 2-core CPU (4 epochs, rungs 1, 2, 4), one seed
PROTOCOLS = {
    "surrogate": Protocol(10, 1, 3.0, 200, 300, (0, 1, 2, 3, 4), 2, 1.0, ("--surrogate", str(TRUTH))),
    "small": Protocol(4, 1, 2.0, 4, 12, (0,), 2, 1.0, tuple(SMALL)),
}


@dataclass(frozen=True)
class Trial:
    epochs: int  # epochs run
    max_epochs: int
    score: float  # kNN at its last epoch
    completed: float  # POSIX time the study recorded its end


# ----------------------------------------------------------------------------- pure parts

def trial_epochs_to_target(trials: Sequence[Trial], target: float) -> tuple[int, bool]:
    """Epochs of the trials in order of completion, summed up to and including the first full-budget
    trial whose final score is >= target; (all epochs, False) when none is."""
    spent = 0
    for t in sorted(trials, key=lambda t: t.completed):
        spent += t.epochs
        if t.epochs >= t.max_epochs and t.score >= target:
            return spent, True
    return spent, False


def replay_asha(curves: Sequence[dict[int, float]], marks: Sequence[float], reduction_factor: float,
                max_epochs: int) -> list[int]:
    """Epochs each trial runs under Ray's asynchronous rule when trials run one after another (max_concurrent
    1): at a milestone a trial stops if its score is below the (1 - 1/rf) percentile of the scores recorded
    there by earlier trials (none recorded: it continues), then its score is recorded. ``curves``: per
    trial, score by epoch, in start order; a trial without a score at a milestone it would reach (it failed
    or was interrupted before) ends at its last epoch."""
    recorded: list[list[float]] = [[] for _ in marks]
    out = []
    for curve in curves:
        ran = max_epochs
        for i, mark in enumerate(marks):
            if math.ceil(mark) not in curve:  # it ended there for another reason (failed, interrupted)
                ran = max(curve, default=0)
                break
            score = curve[math.ceil(mark)]
            cutoff = np.nanpercentile(recorded[i], (1 - 1 / reduction_factor) * 100) if recorded[i] else None
            recorded[i].append(score)
            if cutoff is not None and score < cutoff:
                ran = math.ceil(mark)
                break
        out.append(ran)
    return out


def reached_shares(epochs_run: Sequence[int], rungs: Sequence[int]) -> list[float]:
    """Share of trials that ran at least each rung's epochs."""
    return [sum(e >= r for e in epochs_run) / len(epochs_run) for r in rungs]


def epochs_per_trial(shares: Sequence[float], rungs: Sequence[int]) -> float:
    """Mean epochs a trial runs when ``shares[k]`` of the trials reach ``rungs[k]`` (the first rung: all)."""
    return float(sum(s * (r - prev) for s, r, prev in zip(shares, rungs, [0, *rungs[:-1]])))


@functools.lru_cache
def iid_async_shares(n_trials: int, marks: tuple[float, ...], reduction_factor: float, max_epochs: int,
                     rungs: tuple[int, ...], reps: int = 200, seed: int = 0) -> list[float]:
    """Expected ``reached_shares`` of ``replay_asha`` for ``n_trials`` with i.i.d. scores (the same rank at
    every epoch, as on the surrogate): what asynchrony alone does, without a sampler that improves."""
    rng = np.random.default_rng(seed)
    total = np.zeros(len(rungs))
    for _ in range(reps):
        curves = [dict.fromkeys(range(1, max_epochs + 1), s) for s in rng.random(n_trials)]
        total += reached_shares(replay_asha(curves, marks, reduction_factor, max_epochs), rungs)
    return list(total / reps)


# ----------------------------------------------------------------------------- running the driver

def method_space(out: Path, method: str, p: Protocol) -> Path:
    """augs.yaml with the method's sampler and ASHA (or none)."""
    sampler, asha = {**METHODS, **SURVIVAL_METHODS}[method]
    raw = yaml.safe_load(SPACE.read_text())
    raw["sampler"] = sampler
    raw["asha"] = {"grace_period": p.grace_period, "reduction_factor": p.reduction_factor} if asha else None
    path = out / "spaces" / f"{method}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by experiments/search_efficiency.py from {SPACE}\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def finished(exp: Path, trials: int, target: float | None) -> bool:
    """The search has run all its trials, or (``target`` given) a full-budget trial has reached it."""
    if not (exp / META_FILE).exists():
        return False
    try:
        done, table = read_trials(exp)
    except (OSError, KeyError, ValueError):  # a file being written, or no study yet
        return False
    return (len(table) >= trials and not (table.status == "RUNNING").any()) or (
        target is not None and trial_epochs_to_target(done, target)[1])


def run_search(space: Path, name: str, runs: Path, seed: int, p: Protocol, trials: int, max_concurrent: int,
               target: float | None, ip: str) -> Path:
    """One search with the real driver (an interrupted one of the same name resumes). With a known
    ``target`` the driver is stopped (SIGINT: Ray stops the trials and saves the experiment) once a
    full-budget trial has reached it: the rest of the search would not change trial-epochs to target."""
    exp = runs / name
    cpus = min(p.cpus_per_trial, 2 / max_concurrent)
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", str(space), "--name", name, "--storage-path",
           str(runs), "--seed", str(seed), "--max-epochs", str(p.max_epochs), "--num-samples", str(trials),
           "--max-concurrent", str(max_concurrent), "--cpus-per-trial", f"{cpus:g}", "--gpus-per-trial", "0",
           "--node-ip-address", ip, *p.driver_args]
    log = runs / f"{name}.log"
    runs.mkdir(parents=True, exist_ok=True)
    for _ in range(ATTEMPTS):  # the same command again resumes; on a loaded machine Ray's start can time out
        if finished(exp, trials, target):
            return exp
        with log.open("a") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV})
            while proc.poll() is None:
                try:
                    proc.wait(POLL_S)
                except subprocess.TimeoutExpired:
                    if target is not None and finished(exp, trials, target):
                        proc.send_signal(signal.SIGINT)
                        proc.wait()
        if proc.returncode == 0:  # the driver ran the search to its end (errored trials are not re-run)
            return exp
    if finished(exp, trials, target):
        return exp
    raise RuntimeError(f"{' '.join(cmd)}: not finished after {ATTEMPTS} attempts; see {log}")


def read_trials(exp: Path) -> tuple[list[Trial], pd.DataFrame]:
    """The experiment's trials (completion time from the study) and its trials table."""
    table = trials_table(exp)
    study = {t.number: t for t in open_study(exp, json.loads((exp / META_FILE).read_text())).get_trials(deepcopy=False)}
    trials = [Trial(int(r.epochs_run), int(r.max_epochs), float(r.last_knn),
                    study[r.optuna_number].datetime_complete.timestamp())
              for r in table.itertuples() if study[r.optuna_number].datetime_complete is not None]
    return trials, table


def run_all(jobs: list[tuple], ips: list[str], parallel: int) -> dict[tuple, Path]:
    """Run the searches, ``parallel`` at a time, each on its own Ray address."""
    free: queue.Queue[str] = queue.Queue()
    for ip in ips[:parallel]:
        free.put(ip)

    def one(job: tuple) -> Path:
        ip = free.get()
        try:
            return run_search(*job[1:], ip=ip)
        finally:
            free.put(ip)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = {job[0]: pool.submit(one, job) for job in jobs}
        return {key: f.result() for key, f in futures.items()}


# ----------------------------------------------------------------------------- report

def paired_bootstrap_ratio(a: Sequence[float], b: Sequence[float], reps: int = 10000,
                           seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of median(a) / median(b) with the seeds resampled *together*:
    a[i] and b[i] are the same seed, whose first trials are the same configs in every method (the start-up
    design, or TPE's random start-up drawn as RandomSampler draws), so a resample keeps the pairs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = np.random.default_rng(seed).integers(0, len(a), (reps, len(a)))
    lo, hi = np.percentile(np.median(a[idx], axis=1) / np.median(b[idx], axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def censoring_note(a_reached: Sequence[bool], b_reached: Sequence[bool]) -> str:
    """What a search that never reached the target (its trial-epochs a lower bound) does to a/b."""
    a_cens, b_cens = not all(a_reached), not all(b_reached)
    if not a_cens and not b_cens:
        return "no censored value"
    if b_cens and not a_cens:
        return (f"{sum(not r for r in b_reached)} censored denominator(s) (a lower bound) taken at its bound: the "
                "ratio and its interval are upper bounds")
    if a_cens and not b_cens:
        return (f"{sum(not r for r in a_reached)} censored numerator(s) (a lower bound) taken at its bound: the "
                "ratio and its interval are lower bounds")
    return "censored values on both sides, taken at their bounds: the ratio is bounded in neither direction"


def paired_sign_test(a: Sequence[float], b: Sequence[float], a_reached: Sequence[bool],
                     b_reached: Sequence[bool]) -> tuple[int, int, float]:
    """Seeds where a needed fewer trial-epochs than b, seeds where the order is known, and the exact two-sided
    sign-test p over those. A censored value x (not reached) means "at least x": the order is known when
    the other value is a reached one below it; otherwise (both censored, a censored one at or below the
    other, or a tie) the seed is left out."""
    fewer = known = 0
    for x, y, rx, ry in zip(a, b, a_reached, b_reached):
        if rx and ry and x != y:
            known, fewer = known + 1, fewer + (x < y)
        elif rx and not ry and x < y:  # y is at least its bound, above x
            known, fewer = known + 1, fewer + 1
        elif ry and not rx and y < x:
            known += 1
    p = float(stats.binomtest(fewer, known, 0.5).pvalue) if known else float("nan")
    return fewer, known, p


def comparison_lines(eff: pd.DataFrame) -> list[str]:
    """TPE + ASHA against each full-budget method, paired by seed: ratio of medians with a paired bootstrap
    interval, the censoring's direction, and an exact sign test; Holm over the two comparisons."""
    a_part = eff[eff.method == "tpe_asha"].set_index("seed")
    found = []
    for base in ("random_full", "tpe_full"):
        b_part = eff[eff.method == base].set_index("seed")
        seeds = sorted(set(a_part.index) & set(b_part.index))
        if not seeds:
            continue
        a, b = a_part.loc[seeds, "trial_epochs_to_target"].to_numpy(float), b_part.loc[seeds, "trial_epochs_to_target"]
        ar, br = a_part.loc[seeds, "reached"].astype(bool).tolist(), b_part.loc[seeds, "reached"].astype(bool).tolist()
        found.append((base, seeds, a, b.to_numpy(float), ar, br, paired_sign_test(a, b.to_numpy(float), ar, br)))
    p_holm = holm(np.array([f[6][2] for f in found])) if found else []
    lines = []
    for (base, seeds, a, b, ar, br, (fewer, known, _)), ph in zip(found, p_holm):
        ratio = float(np.median(a) / np.median(b))
        spread = ("no interval with one seed" if len(seeds) < 2 else
                  "95 % paired bootstrap interval over seeds {:.2f}-{:.2f}".format(*paired_bootstrap_ratio(a, b)))
        lines.append(f"\nTPE + ASHA / {base}: median trial-epochs ratio {ratio:.2f} (n = {len(seeds)} seeds, paired; "
                     f"{spread}; {censoring_note(ar, br)}). Fewer trial-epochs in {fewer} of the {known} seeds whose "
                     f"order is known (exact sign test, p_Holm {ph:.2g}, Holm over the {len(found)} comparisons).")
    return lines


def efficiency_lines(eff: pd.DataFrame, target: float, target_note: str) -> list[str]:
    lines = [f"Target: {target:.4f} ({target_note}).", "",
             "| method | n seeds | reached | trial-epochs to target, median | min-max | best final score, median |",
             "|---|---|---|---|---|---|"]
    for method, g in eff.groupby("method", sort=False):
        lines.append(f"| {method} | {len(g)} | {int(g.reached.sum())}/{len(g)} | {g.trial_epochs_to_target.median():g} "
                     f"| {g.trial_epochs_to_target.min()}-{g.trial_epochs_to_target.max()} | {g.best_score.median():.4f} |")
    lines += comparison_lines(eff)
    if not eff.reached.all():
        lines.append("\nA search that did not reach the target counts all its trial-epochs (a lower bound).")
    return lines


def survival_rows(method: str, seed: int, max_concurrent: int, p: Protocol, table: pd.DataFrame) -> list[dict]:
    """Per rung: expected (synchronous 1/rf^k), Ray's rule replayed on these trials in start order
    (exact for max_concurrent 1), its i.i.d. expectation for as many trials, and the actual share."""
    rungs = asha_rungs(p.grace_period, p.reduction_factor, p.max_epochs)
    marks = asha_milestones(p.grace_period, p.reduction_factor, p.max_epochs)
    # finished trials with at least one report (a worker killed before its first epoch ranked nothing)
    done = table[(table.status != "RUNNING") & (table.epochs_run > 0)].sort_values("optuna_number")
    curves = [{int(k.removeprefix("knn_e")): v for k, v in r.items() if k.startswith("knn_e") and pd.notna(v)}
              for r in done.to_dict("records")]
    replay = replay_asha(curves, marks, p.reduction_factor, p.max_epochs)
    actual = reached_shares(done.epochs_run.tolist(), rungs)
    iid = iid_async_shares(len(done), tuple(marks), p.reduction_factor, p.max_epochs, tuple(rungs))
    return [{"method": method, "seed": seed, "max_concurrent": max_concurrent, "rung": f"e{r}", "n_trials": len(done),
             "n_reached": int((done.epochs_run >= r).sum()), "expected_sync": min(1.0, p.reduction_factor ** -k),
             "expected_async_iid": iid[k], "replay_in_start_order": reached_shares(replay, rungs)[k],
             "actual": actual[k], "replay_agrees_per_trial": float(np.mean(np.array(replay) == done.epochs_run.to_numpy()))}
            for k, r in enumerate(rungs)]


def survival_lines(surv: pd.DataFrame) -> list[str]:
    mean = surv.groupby(["method", "max_concurrent", "rung"], sort=False).agg(
        n_searches=("seed", "size"), n_trials=("n_trials", "sum"), expected_sync=("expected_sync", "first"),
        expected_async_iid=("expected_async_iid", "mean"), replay=("replay_in_start_order", "mean"),
        actual=("actual", "mean"), actual_sd=("actual", "std"), agree=("replay_agrees_per_trial", "mean")).reset_index()
    lines = [("| method | max_concurrent | rung | searches (trials) | expected 1/rf^k | Ray's rule, i.i.d. scores "
              "| Ray's rule replayed on these trials | actual (sd over seeds) | trials where replay = actual |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in mean.itertuples():
        sd = "" if math.isnan(r.actual_sd) else f" ± {r.actual_sd:.3f}"
        lines.append(f"| {r.method} | {r.max_concurrent} | {r.rung} | {r.n_searches} ({r.n_trials}) | {r.expected_sync:.3f} "
                     f"| {r.expected_async_iid:.3f} | {r.replay:.3f} | {r.actual:.3f}{sd} | {r.agree:.0%} |")
    lines += ["", "Epochs per trial these shares imply (the saving against the full budget):", "",
              "| method | max_concurrent | expected 1/rf^k | Ray's rule, i.i.d. | actual |", "|---|---|---|---|---|"]
    for (method, conc), g in mean.groupby(["method", "max_concurrent"], sort=False):
        rungs = [int(r.removeprefix("e")) for r in g.rung]
        lines.append(f"| {method} | {conc} | " + " | ".join(
            f"{epochs_per_trial(g[c].tolist(), rungs):.2f}" for c in ("expected_sync", "expected_async_iid", "actual"))
            + f" (of {rungs[-1]}) |")
    return lines


def run_set(name: str, args: argparse.Namespace) -> None:
    p = PROTOCOLS[name]
    seeds = tuple(args.seeds) if args.seeds else p.seeds
    out = args.out / name
    runs = args.runs / name
    spaces = {m: method_space(out, m, p) for m in {**METHODS, **(SURVIVAL_METHODS if args.survival else {})}}
    surrogate = "--surrogate" in p.driver_args
    if surrogate:
        from uclser_tune.search.spaces import load_space
        from uclser_tune.search.surrogate import best_achievable, load_truth

        best, _ = best_achievable(load_truth(TRUTH), load_space(spaces["tpe_full"]))
        note = f"best_achievable of {TRUTH.name} on {SPACE.name} = {best:.4f}, minus {TOLERANCE}"
    main_keys = [(m, s, p.max_concurrent) for m in METHODS for s in seeds]
    jobs = [((m, s, c), spaces[m], f"{m}_s{s}_c{c}", runs, s, p, p.trials_asha if METHODS[m][1] else p.trials_full,
             c, best - TOLERANCE if surrogate else None) for m, s, c in main_keys]
    jobs += [((m, seeds[0], c), spaces[m], f"{m}_s{seeds[0]}_c{c}_n{SURVIVAL_TRIALS}", runs, seeds[0], p,
              SURVIVAL_TRIALS, c, None) for c in args.survival for m in ("tpe_asha", "random_asha")
             if (m, seeds[0], c) not in main_keys]
    ips = [f"127.0.0.{args.ip_base + i}" for i in range(args.parallel)]
    exps = run_all(jobs, ips, args.parallel)
    read = {key: read_trials(exp) for key, exp in exps.items()}
    if not surrogate:
        best = max(t.score for key in main_keys for t in read[key][0] if t.epochs >= t.max_epochs)
        note = (f"best final score of any full-budget trial of any method and seed here = {best:.4f}, "
                f"minus {TOLERANCE}")
    target = best - TOLERANCE
    rows = []
    for m, s, c in main_keys:
        trials = read[(m, s, c)][0]
        spent, reached = trial_epochs_to_target(trials, target)
        rows.append({"method": m, "seed": s, "trial_epochs_to_target": spent, "reached": reached,
                     "best_score": max((t.score for t in trials if t.epochs >= t.max_epochs), default=math.nan)})
    eff = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    eff.to_csv(out / "search_efficiency.csv", index=False)
    surv = pd.DataFrame([row for key, (_, table) in read.items() if {**METHODS, **SURVIVAL_METHODS}[key[0]][1]
                         for row in survival_rows(*key, p, table)])
    surv.to_csv(out / "rung_survival.csv", index=False)
    spent = {m: sum(t.epochs for key in main_keys if key[0] == m for t in read[key][0]) for m in METHODS}
    text = [f"# Search efficiency: {name}", "",
            f"Space {SPACE} ({', '.join(f'{m}: {spaces[m].name}' for m in METHODS)}), "
            f"{' '.join(p.driver_args)}; {p.max_epochs} epochs per full trial, ASHA grace {p.grace_period}, "
            f"reduction {p.reduction_factor:g}; trials per search: {p.trials_full} full-budget, {p.trials_asha} "
            f"TPE + ASHA" + (", each stopped once a full-budget trial reached the target" if surrogate else "")
            + f"; max_concurrent {p.max_concurrent}; seeds {', '.join(map(str, seeds))}. Trial-epochs counted "
            f"in order of trial completion. Trial-epochs run in all: "
            + ", ".join(f"{m} {n}" for m, n in spent.items()) + ".", "",
            *efficiency_lines(eff, target, note), "", "## ASHA rung survival", "", *survival_lines(surv)]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(PROTOCOLS), nargs="+", default=["surrogate"])
    ap.add_argument("--seeds", type=int, nargs="+", help="override the set's seeds")
    ap.add_argument("--survival", type=int, nargs="*", default=[],
                    help=f"also run TPE + ASHA and random + ASHA (first seed, {SURVIVAL_TRIALS} trials, no stop at the "
                         f"target) at these max_concurrent values")
    ap.add_argument("--parallel", type=int, default=1, help="searches at once, each on its own 127.0.0.x")
    ap.add_argument("--ip-base", type=int, default=40, help="Ray addresses 127.0.0.<ip-base + i>")
    ap.add_argument("--runs", type=Path, default=Path("runs/search_efficiency"), help="experiment dirs")
    ap.add_argument("--out", type=Path, default=Path("results/search_efficiency"))
    ap.add_argument("--compare", type=Path, nargs="+", metavar="CSV",
                    help="only print the paired comparisons of committed search_efficiency.csv files")
    args = ap.parse_args()
    if args.compare:
        for path in args.compare:
            print(f"{path}:", *comparison_lines(pd.read_csv(path)), sep="\n")
        return
    for name in args.set:
        run_set(name, args)


if __name__ == "__main__":
    main()
