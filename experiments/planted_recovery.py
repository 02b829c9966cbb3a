"""Does the analysis recover planted truths, for every truth file and several sampler seeds? The planted-truth
check's search, repeated, with and without the balanced start-up design.

    nice -n 5 python -m experiments.planted_recovery            # 4 truths x 5 seeds x 2 starts, ~15 min here

Protocol (fixed before any result was read): ``augs.yaml`` with ``--surrogate`` for every
``search_spaces/truths/augs_*.yaml``, 48 trials, 8 epochs, ASHA grace 2 and reduction 2, 1 CPU per
trial, TPE seeds 0-4. ``design`` is the space as shipped (its first 16 trials an orthogonal array over
the on/off parameters); ``sampler`` is the same space with ``startup: sampler`` (TPE's 10 random
start-up trials). Each experiment is checked with ``experiments.recovery`` (the four claims).

Outputs in ``--out``: ``recovery.csv`` (truth, seed, startup, claim, ok, detail) and ``summary.md``
(claims met per truth and start, over the seeds).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import yaml
from scipy import stats

from experiments import recovery

SPACE = Path("search_spaces/augs.yaml")
TRUTHS = sorted(Path("search_spaces/truths").glob("augs_*.yaml"))
SEARCH = ["--num-samples", "48", "--max-epochs", "8", "--grace-period", "2", "--reduction-factor", "2",
          "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
RAY_ENV = {"RAY_memory_monitor_refresh_ms": "0"}  # see experiments/search_efficiency.py


def space_copies(out: Path) -> dict[str, Path]:
    """The shipped space (design start-up) and a copy that leaves the start to the sampler."""
    raw = yaml.safe_load(SPACE.read_text())
    copy = out / "spaces" / "augs_sampler_startup.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump({**raw, "startup": "sampler"}, sort_keys=False))
    return {"design": SPACE, "sampler": copy}


def one(truth: Path, seed: int, startup: str, space: Path, out: Path, ips: queue.Queue) -> list[dict]:
    """One search on a Ray address no other running search has, then its claims."""
    name = f"{truth.stem}_s{seed}_{startup}"
    ip = ips.get()
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", str(space), "--surrogate", str(truth),
           "--seed", str(seed), "--name", name, "--storage-path", str(out / "runs"), "--node-ip-address", ip,
           *SEARCH]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **RAY_ENV}, check=False)
    finally:
        ips.put(ip)
    if done.returncode:
        raise RuntimeError(f"{name}: search failed\n{done.stderr[-2000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return [{"truth": truth.stem, "seed": seed, "startup": startup, **c.__dict__}
            for c in recovery.check(out / "runs" / name, truth)]


def mcnemar_exact(a: pd.Series, b: pd.Series) -> tuple[int, int, float]:
    """Paired outcomes (the same truth and seed under two start-ups): searches only ``a`` recovered, only
    ``b`` recovered, and the exact McNemar p (two-sided binomial test of the discordant pairs at 1/2)."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return only_a, only_b, p


def summary(rows: pd.DataFrame) -> str:
    met = rows.groupby(["truth", "startup", "seed"])["ok"].all().rename("all claims")
    per = met.groupby(["truth", "startup"]).agg(lambda s: f"{int(s.sum())}/{len(s)}").unstack("startup")
    failed = rows[~rows["ok"]][["truth", "startup", "seed", "claim", "detail"]]
    paired = met.unstack("startup")
    test = ""
    if {"design", "sampler"} <= set(paired.columns):
        paired = paired.dropna()
        only_d, only_s, p = mcnemar_exact(paired["design"].astype(bool), paired["sampler"].astype(bool))
        test = (f"\n\nAll claims met: design {int(paired['design'].sum())}/{len(paired)}, sampler "
                f"{int(paired['sampler'].sum())}/{len(paired)} (the same truths and seeds, paired): {only_d} searches "
                f"recovered only with the design, {only_s} only with the sampler's start-up; exact McNemar p = "
                f"{p:.3g} (two-sided, one test, no correction)")
    return ("# Planted-truth recovery\n\nSeeds whose experiment met all four claims of the planted-truth check "
            "(`experiments/recovery.py`), per truth file and start-up:\n\n" + per.to_markdown() + test +
            "\n\nClaims not met:\n\n" + (failed.to_markdown(index=False) if len(failed) else "none") + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/planted_recovery"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--parallel", type=int, default=2, help="searches at once (each on its own Ray address)")
    p.add_argument("--summarise", action="store_true", help="only rewrite summary.md from the committed recovery.csv")
    args = p.parse_args(argv)
    if args.summarise:
        (args.out / "summary.md").write_text(summary(pd.read_csv(args.out / "recovery.csv")))
        print(summary(pd.read_csv(args.out / "recovery.csv")))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    spaces = space_copies(args.out)
    jobs = [(t, s, st) for t in TRUTHS for s in args.seeds for st in spaces]
    ips: queue.Queue = queue.Queue()
    for i in range(args.parallel):
        ips.put(f"127.0.0.{40 + i}")
    rows: list[dict] = []
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(one, t, s, st, spaces[st], args.out, ips) for t, s, st in jobs]
        for done, f in enumerate(concurrent.futures.as_completed(futures), start=1):
            rows += f.result()
            print(f"{done}/{len(jobs)} searches checked", flush=True)
    table = pd.DataFrame(rows).sort_values(["truth", "startup", "seed"], kind="stable")
    table.to_csv(args.out / "recovery.csv", index=False)
    (args.out / "summary.md").write_text(summary(table))
    print(summary(table))


if __name__ == "__main__":
    main()
