"""The search's own cost as the trials accumulate: a planted-truth surrogate search (its scores cost
nothing, so what is measured is the driver, Ray and the storage) at several sizes.

    python -m benchmarks.scale [--sizes 100 300 1000] [--out results/scale]

Each size runs, in a fresh temporary experiment dir,

    python -m uclser_tune.search --space augs.yaml --surrogate search_spaces/truths/augs_mixback.yaml \
        --num-samples N --max-epochs 27 --grace-period 1 --reduction-factor 3 --cpus-per-trial 1 \
        --gpus-per-trial 0

and reports: trials started per second over each tenth of the run (from the study's start times:
a cost that grows with the trials before shows as a falling rate); the driver process's own CPU
seconds per trial and its peak RSS (sampled every 0.2 s; Ray's GCS, raylet and trial workers are
other processes); the per-epoch report's cost (the median gap between one trial's consecutive
reports: a surrogate epoch computes nothing, so the gap is the checkpoint, ``tune.report`` and the
driver's handling of it); the experiment dir's size; and the time of ``python -m analysis`` and of
optuna-dashboard's loader (its study API, as the dashboard calls it) on the result. Name the CPU and
say whether the machine was quiet with any figure taken from it.
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
from wsgiref.util import setup_testing_defaults

import psutil
import yaml

from benchmarks.common import cpu_name

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "search_spaces" / "truths" / "augs_mixback.yaml"


def space_for(sampler: str, work: Path) -> str:
    """``augs.yaml`` itself (TPE), or a copy of it that only changes its sampler. A random suggestion does
    not look at the earlier trials, while a TPE one fits its density estimators to all of them, so the
    difference between the two runs is TPE's own cost and the random run is the rest of the driver's."""
    if sampler == "tpe":
        return "augs.yaml"
    space = yaml.safe_load((ROOT / "search_spaces" / "augs.yaml").read_text())
    path = work / f"augs_{sampler}.yaml"
    path.write_text(yaml.safe_dump({**space, "sampler": sampler}, sort_keys=False))
    return str(path)


def search_command(n: int, storage: Path, node_ip: str, space: str = "augs.yaml") -> list[str]:
    return [sys.executable, "-m", "uclser_tune.search", "--space", space, "--surrogate", str(TRUTH),
            "--name", f"scale{n}", "--storage-path", str(storage), "--node-ip-address", node_ip,
            "--num-samples", str(n), "--max-epochs", "27", "--grace-period", "1", "--reduction-factor", "3",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0"]


def run_watched(cmd: list[str], log: Path, every_s: float = 0.2) -> dict[str, float]:
    """Run ``cmd``; its own CPU seconds (user + system, without its children) and peak RSS."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    watched = psutil.Process(proc.pid)
    cpu = rss = 0.0
    started = time.monotonic()
    while proc.poll() is None:
        try:
            times = watched.cpu_times()
            cpu = times.user + times.system
            rss = max(rss, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(every_s)
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return {"wall_s": time.monotonic() - started, "driver_cpu_s": cpu, "driver_peak_rss_mb": rss / 1e6}


def rate_per_tenth(starts: list[float]) -> list[float | None]:
    """Trials started per second in each tenth of the trials (by start order); None where a tenth has
    fewer than two trials or no time between its first and last start."""
    starts = sorted(starts)
    n, rates = len(starts), []
    for k in range(10):
        part = starts[k * n // 10:(k + 1) * n // 10]
        span = part[-1] - part[0] if len(part) > 1 else 0.0
        rates.append((len(part) - 1) / span if span > 0 else None)
    return rates


def report_gaps(exp: Path) -> list[float]:
    """Seconds between consecutive reports of one trial, over all trials."""
    gaps = []
    for result in exp.glob("trial_*/result.json"):
        at = [json.loads(line)["reported_at"] for line in result.read_text().splitlines() if line.strip()]
        gaps += [b - a for a, b in itertools.pairwise(at)]
    return gaps


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def dashboard_load_s(exp: Path) -> float:
    """optuna-dashboard's study API on the experiment's journal, as its front end calls it."""
    import optuna_dashboard

    from uclser_tune.search.results import read_meta, storage_from

    meta = read_meta(exp)
    storage = storage_from(meta["storage"], exp)
    started = time.perf_counter()
    app = optuna_dashboard.wsgi(storage)
    study_id = storage.get_study_id_from_name(meta["study_name"])
    environ, status = {"PATH_INFO": f"/api/studies/{study_id}"}, []
    setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda s, headers, *_: status.append(s)))
    if status != ["200 OK"] or not json.loads(body)["trials"]:
        raise RuntimeError(f"optuna-dashboard's study API answered {status}")
    return time.perf_counter() - started


def measure(n: int, work: Path, node_ip: str, sampler: str = "tpe") -> dict:
    from uclser_tune.search.results import open_study, read_meta

    storage = work / "runs"
    load_before = os.getloadavg()
    watched = run_watched(search_command(n, storage, node_ip, space_for(sampler, work)), work / f"search{n}.log")
    load_after = os.getloadavg()
    exp = storage / f"scale{n}"
    study = open_study(exp, read_meta(exp))
    starts = [t.datetime_start.timestamp() for t in study.trials if t.datetime_start]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(work / f"analysis{n}")], cwd=ROOT,
                   check=True, capture_output=True)
    analysis_s = time.perf_counter() - started
    gaps = report_gaps(exp)
    return {"trials": len(study.trials), **watched, "driver_cpu_s_per_trial": watched["driver_cpu_s"] / n,
            "rate_per_tenth": rate_per_tenth(starts), "report_s_median": statistics.median(gaps),
            "report_s_p90": statistics.quantiles(gaps, n=10)[-1], "reports": len(gaps),
            "experiment_mb": dir_mb(exp), "analysis_s": analysis_s, "dashboard_s": dashboard_load_s(exp),
            "load_before": load_before, "load_after": load_after, "cpu": cpu_name(), "sampler": sampler,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(rows: dict[int, dict], cpu: str, sampler: str = "tpe") -> str:
    flag = "" if sampler == "tpe" else f" --sampler {sampler}"
    lines = [(f"Machine: {cpu}, {os.cpu_count()} cores; `python -m benchmarks.scale --sizes "
             f"{' '.join(map(str, rows))}{flag}`; load = the 1-minute load average before and after the search."), "",
             ("| trials | wall s | driver CPU s / trial | driver peak RSS MB | report s (median, p90) | "
             "rate, 2nd tenth (trials/s) | rate, last tenth | last / 2nd | experiment MB | analysis s | "
             "dashboard s | load |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        load = f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f}" if "load_before" in r else "n/a"
        second, last = r["rate_per_tenth"][1], r["rate_per_tenth"][-1]
        ratio = f"{last / second:.2f}" if second and last else "n/a"
        lines.append(f"| {n} | {r['wall_s']:.0f} | {r['driver_cpu_s_per_trial']:.3f} | {r['driver_peak_rss_mb']:.0f} | "
                     f"{r['report_s_median']:.3f}, {r['report_s_p90']:.3f} | {second or float('nan'):.3f} | "
                     f"{last or float('nan'):.3f} | {ratio} | {r['experiment_mb']:.1f} | {r['analysis_s']:.1f} | "
                     f"{r['dashboard_s']:.2f} | {load} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="trials per search")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "scale",
                    help="where scale.json and scale.md go")
    ap.add_argument("--node-ip-address", default="127.0.0.31", help="loopback address of the searches' Ray")
    ap.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                    help="augs.yaml's own TPE, or the same space with the random sampler (the driver's cost "
                         "without TPE's; give it its own --out)")
    ap.add_argument("--fresh", action="store_true",
                    help="drop the sizes already in OUT/scale.json (by default a run replaces only its own sizes)")
    args = ap.parse_args(argv)
    cpu = cpu_name()
    saved = args.out / "scale.json"
    rows = {} if args.fresh or not saved.exists() else {int(n): r for n, r in json.loads(saved.read_text())["sizes"].items()}
    mixed = sorted({r.get("sampler", "tpe") for r in rows.values()} - {args.sampler})
    if mixed:
        ap.error(f"{saved} holds rows of the {mixed[0]} sampler: give --sampler {args.sampler} its own --out")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale") as work:
        for n in args.sizes:
            rows[n] = measure(n, Path(work), args.node_ip_address, args.sampler)
            print(f"{n} trials: {json.dumps(rows[n])}", flush=True)
            rows = dict(sorted(rows.items()))
            saved.write_text(json.dumps({"cpu": cpu, "sizes": rows}, indent=1))  # each size as soon as it is done
            (args.out / "scale.md").write_text(markdown(rows, cpu, args.sampler))
    print(markdown(rows, cpu, args.sampler))
    return 0


if __name__ == "__main__":
    sys.exit(main())
