"""The per-epoch report's cost (the trial's checkpoint, ``tune.report`` and the driver's handling of the
result, which the trial waits for), now against a baseline commit, in one run on the same machine.

    python -m benchmarks.report_cost [--baseline 3465f0a] [--repeats 2] [--out results/report_cost]

The baseline is checked out into a temporary git worktree and run with this environment's Python (the
worktree's ``uclser_tune`` comes first on the path); the two alternate, ``--repeats`` times each:

- surrogate: ``--space augs.yaml --surrogate search_spaces/truths/augs_mixback.yaml``, 4 trials of 27
  epochs, 2 at a time, no early stopping (grace period = budget). A surrogate epoch computes a score
  and writes a 15-byte checkpoint, so the gap between one trial's consecutive reports (``reported_at``)
  is the report. Target: median < 0.1 s.
- training: the smoke search (``--space smoke.yaml --smoke``: the tiny synthetic set, ResNet-18 at width
  1/8) with whole epochs of the tiny set (``--set train.max_batches_per_epoch=0``), 4 trials of 4 epochs,
  2 at a time, no early stopping. Per report after a trial's first: Ray's time for the iteration less
  the epoch's and the kNN's own seconds, as a share of the epoch's seconds. Target: median < 5 %.

Name the CPU and the load (both are printed and written) with any figure taken from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cpu_name

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "search_spaces" / "truths" / "augs_mixback.yaml"


def surrogate_command(storage: Path, node_ip: str) -> list[str]:
    return [sys.executable, "-m", "uclser_tune.search", "--space", "augs.yaml", "--surrogate", str(TRUTH),
            "--name", "surrogate", "--storage-path", str(storage), "--node-ip-address", node_ip,
            "--num-samples", "4", "--max-epochs", "27", "--grace-period", "27", "--reduction-factor", "3",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2"]


def smoke_command(storage: Path, node_ip: str) -> list[str]:
    return [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--smoke", "--name", "smoke",
            "--storage-path", str(storage), "--node-ip-address", node_ip, "--set", "train.max_batches_per_epoch=0",
            "--num-samples", "4", "--max-epochs", "4", "--grace-period", "4", "--reduction-factor", "2"]


def reports(exp: Path) -> list[list[dict]]:
    """Each trial's result rows, in order."""
    out = []
    for result in sorted(exp.glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out.append(rows)
    return out


def report_gaps(trials: list[list[dict]]) -> list[float]:
    """Seconds between one trial's consecutive reports, over all trials."""
    return [b["reported_at"] - a["reported_at"] for rows in trials for a, b in itertools.pairwise(rows)]


def report_shares(trials: list[list[dict]]) -> tuple[list[float], list[float]]:
    """Per report after a trial's first: the iteration's seconds beyond its epoch and kNN, and that as a
    share of the epoch's seconds."""
    extra, share = [], []
    for rows in trials:
        for r in rows[1:]:
            e = r["time_this_iter_s"] - r["epoch_seconds"] - r.get("knn_seconds", 0.0)
            extra.append(e)
            share.append(e / r["epoch_seconds"])
    return extra, share


def run_search(cmd: list[str], cwd: Path, log: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=cwd, env={**env, "PYTHONPATH": str(cwd)}, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd} failed (exit {done.returncode}); see {log}")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


def measure(code: Path, work: Path, node_ip: str) -> dict:
    loads = [load()]
    work.mkdir(parents=True)
    run_search(surrogate_command(work / "runs", node_ip), code, work / "surrogate.log")
    gaps = report_gaps(reports(work / "runs" / "surrogate"))
    loads.append(load())
    run_search(smoke_command(work / "runs", node_ip), code, work / "smoke.log")
    extra, share = report_shares(reports(work / "runs" / "smoke"))
    loads.append(load())
    return {"surrogate_gap_s": statistics.median(gaps), "surrogate_gap_p90_s": statistics.quantiles(gaps, n=10)[-1],
            "surrogate_reports": len(gaps), "training_report_s": statistics.median(extra),
            "training_report_share": statistics.median(share), "training_reports": len(share), "load": loads}


ROWS = (("surrogate: gap between reports, s (median)", "surrogate_gap_s", ".3f"),
        ("surrogate: gap between reports, s (p90)", "surrogate_gap_p90_s", ".3f"),
        ("training (tiny set, whole epochs): report beyond the epoch and kNN, s (median)", "training_report_s", ".3f"),
        ("training (tiny set, whole epochs): report / epoch (median)", "training_report_share", ".1%"))


def markdown(result: dict, repeats: int) -> str:
    b, n = result["median"]["baseline"], result["median"]["now"]
    loads = ", ".join(x for runs in result["runs"].values() for r in runs for x in r["load"])
    lines = [f"Machine: {result['cpu']}, {result['cores']} cores; load average during the runs: {loads}.",
             (f"`python -m benchmarks.report_cost --baseline {result['baseline']} --repeats {repeats}` (the "
              f"median over the repeats of each run's median)."), "",
             "| per-epoch report | baseline | now | now / baseline |", "|---|---|---|---|"]
    lines += [f"| {label} | {b[k]:{fmt}} | {n[k]:{fmt}} | {n[k] / b[k]:.2f} |" for label, k, fmt in ROWS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="3465f0a", help="the commit to compare with (default: the driver before snapshots stopped growing with the trials)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--node-ip-address", default="127.0.0.32", help="loopback address of the searches' Ray")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "report_cost")
    args = ap.parse_args(argv)
    rows: dict[str, list[dict]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="report_cost") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for i in range(args.repeats):
                for name, code in (("baseline", base), ("now", ROOT)):
                    started = time.perf_counter()
                    rows[name].append(measure(code, Path(tmp) / f"{name}{i}", args.node_ip_address))
                    print(f"{name} #{i} ({time.perf_counter() - started:.0f} s): {json.dumps(rows[name][-1])}",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True,
                           check=False)
    summary = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "load"}
               for name, runs in rows.items()}
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "baseline": args.baseline, "runs": rows, "median": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report_cost.json").write_text(json.dumps(result, indent=1))
    print(table := markdown(result, args.repeats))
    (args.out / "report_cost.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
