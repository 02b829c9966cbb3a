"""Trial start-up overhead of the search: how much of a trial slot's time is not training.

    python -m benchmarks.trial_startup [--trials 6] [--node-ip-address 127.0.0.16]

Runs the smoke search (``--space smoke.yaml --smoke``: tiny set, ResNet-18 at width 1/8, 3 batches per
epoch, ASHA, 2 trials at a time, actors reused) into a temporary experiment and reads every trial's
Ray results. As in the search notes: overhead per trial = (slots × span − Σ training) / trials, where
span runs from the first trial's start to the last one's last report (``reported_at``) and training =
Σ of the epochs' ``epoch_seconds``; the same with the kNN evaluations counted as work (``knn_seconds``).
Then, inside trials: the first iteration's time beyond the epoch and kNN (start-up in the trial: store
fetch, config, tensors, model build, first report), against a later iteration's (the report alone),
and the gap between one trial's end and the next trial's start on the same (reused) worker process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def trial_rows(exp: Path) -> list[dict]:
    """Per trial: its result rows, start (the first report's wall time less Ray's time for that first
    iteration) and end (the last report's wall time)."""
    out = []
    for result in sorted(exp.glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            out.append({"rows": rows, "start": rows[0]["reported_at"] - rows[0]["time_this_iter_s"],
                        "end": rows[-1]["reported_at"], "pid": rows[0]["pid"]})
    return out


def summarise(trials: list[dict], slots: int) -> dict[str, float]:
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    epochs = sum(r["epoch_seconds"] for t in trials for r in t["rows"])
    knn = sum(r.get("knn_seconds", 0.0) for t in trials for r in t["rows"])
    later = [r["time_this_iter_s"] - r["epoch_seconds"] - r.get("knn_seconds", 0.0)
             for t in trials for r in t["rows"][1:]]
    def first_extra(t: dict) -> float:
        r = t["rows"][0]
        return r["time_this_iter_s"] - r["epoch_seconds"] - r.get("knn_seconds", 0.0)

    cold, warm, gaps = [], [], []
    for pid in {t["pid"] for t in trials}:
        mine = sorted((t for t in trials if t["pid"] == pid), key=lambda t: t["start"])
        cold.append(first_extra(mine[0]))  # the worker process's first trial: imports, first optimiser
        warm += [first_extra(t) for t in mine[1:]]
        gaps += [b["start"] - a["end"] for a, b in itertools.pairwise(mine)]
    n = len(trials)
    return {"trials": n, "workers": len({t["pid"] for t in trials}), "span_s": span, "epochs_s": epochs, "knn_s": knn,
            "overhead_per_trial_s": (slots * span - epochs) / n,
            "overhead_per_trial_knn_as_work_s": (slots * span - epochs - knn) / n,
            "cold_first_iter_extra_s": statistics.median(cold),
            "warm_first_iter_extra_s": statistics.median(warm) if warm else float("nan"),
            "later_iter_extra_s": statistics.median(later) if later else float("nan"),
            "warm_worker_gap_s": statistics.median(gaps) if gaps else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--node-ip-address", default="127.0.0.16", help="IP of the local Ray (apart from other users')")
    ap.add_argument("--keep", type=Path, help="write the experiment here instead of a temporary dir")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--smoke", "--name", "startup",
               "--storage-path", str(root), "--num-samples", str(a.trials), "--node-ip-address", a.node_ip_address]
        began = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        s = summarise(trial_rows(root / "startup"), slots=2)
    print(f"smoke search, {s['trials']} trials on {s['workers']} worker processes, 2 slots; command wall {wall:.1f} s")
    print(f"span {s['span_s']:.1f} s; Σ epochs {s['epochs_s']:.1f} s; Σ kNN {s['knn_s']:.1f} s")
    print(f"overhead per trial (notes' formula, epochs as work): {s['overhead_per_trial_s']:.2f} s; "
          f"with kNN as work: {s['overhead_per_trial_knn_as_work_s']:.2f} s")
    print(f"first iteration beyond epoch + kNN (median): {s['cold_first_iter_extra_s']:.2f} s in a worker's first "
          f"trial, {s['warm_first_iter_extra_s']:.2f} s on a reused worker; later iterations: "
          f"{s['later_iter_extra_s']:.2f} s; gap between trials on a reused worker (median): "
          f"{s['warm_worker_gap_s']:.2f} s")


if __name__ == "__main__":
    main()
