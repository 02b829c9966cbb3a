"""Synthetic data set generation and log-mel extraction: time and disk size per size.

    python benchmarks/features.py --size small [--out /tmp/bench_synth]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from uclser_tune.data.store import build_store
from uclser_tune.data.synth import generate


def du(path: Path) -> float:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout.split()[0]) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "full"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_synth"))
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    root, store_dir = a.out / a.size / "data", a.out / a.size / "store"
    shutil.rmtree(a.out / a.size, ignore_errors=True)
    t0 = time.perf_counter()
    summary = generate(root, size=a.size, workers=a.workers)
    t1 = time.perf_counter()
    store = build_store(root, store_dir, a.workers)
    t2 = time.perf_counter()
    t3 = time.perf_counter()
    build_store(root, store_dir, a.workers)  # reuse
    t4 = time.perf_counter()
    frames = sum(len(s.frames) for s in store.splits.values())
    print("| size | clips (noisy/clean/test) | audio min | wav MB | generate s | frames | store MB | extract s | reuse s |")
    print("|---|---|---|---|---|---|---|---|---|")
    c = summary["clips"]
    print(f"| {a.size} | {c['noisy']}/{c['clean']}/{c['test']} | {summary['seconds_total'] / 60:.0f} | {du(root):.0f} "
          f"| {t1 - t0:.0f} | {frames:,} | {du(store_dir):.0f} | {t2 - t1:.0f} | {t4 - t3:.2f} |")


if __name__ == "__main__":
    main()
