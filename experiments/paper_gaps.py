"""The paper's two reversed gaps on the embedded synthetic set, against epoch and by clip length.

    python -m experiments.paper_gaps --seeds 0 1 2 --epochs 40 --jobs 3
    python -m experiments.paper_gaps --aggregate-only        # tables and plot from the finished runs

Three variants of the paper's default are pre-trained with the CPU settings of
``results/README.md`` (ResNet-18 width 1/8, projection 128/64, batch 128, τ 0.2, kNN k 20):

- ``default``: random patches, energy-adjusted mix-back α 0.05, RRC > compression > noise;
- ``same``: the same patch for both views (the paper's d = 0), everything else as ``default``;
- ``none``: no augmentation op (mix-back kept), everything else as ``default``.

At the evaluation epochs each run's encoder is read at the val split with the search objective's kNN
(leave-one-clip-out, k 20, clip majority vote). Besides the objective (balanced accuracy over all val
clips) the script records every val clip's kNN prediction, so the accuracy can be split by clip
length: ≤ 1 s (one evaluation patch; random and same sampling cannot differ on such a clip), 1-3 s
and > 3 s. The objective itself is not changed: the per-clip predictions reproduce its balanced
accuracy exactly (checked at every evaluation).

The gaps are paired by seed (same seed = same initial weights and batch order): ``random-same`` is
default − same and ``da-none`` is default − none; the paper has both positive. Each point is the seed
mean with a two-sided 95 % t-interval (n − 1 degrees of freedom). The curves' intervals are pointwise
(descriptive, not corrected); the final-epoch table carries paired t-test p-values, Holm-corrected
over its rows (2 gaps × 4 clip groups).

Each run writes ``<work>/<variant>-seed<seed>.csv`` when it finishes; a finished run is not run again.
Only seeds whose three variants all finished enter the tables. Outputs in ``--out``: ``runs.csv``
(every run, epoch and clip group), ``gaps.csv`` (per gap, epoch and clip group), ``final.csv``
(final epoch, Holm), ``paper_gaps.png`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.common import cpu_small, git_commit, write_csv
from uclser_tune import atomic
from uclser_tune.config import RunConfig
from uclser_tune.data.store import open_store
from uclser_tune.evaluation.knn import knn_predict
from uclser_tune.evaluation.metrics import accuracy, balanced_accuracy
from uclser_tune.evaluation.patches import embed_patches
from uclser_tune.evaluation.stats import holm, t_interval
from uclser_tune.training import build_model, pretrain
from uclser_tune.training.runtime import amp_dtype as resolve_amp_dtype
from uclser_tune.training.runtime import resolve_precision, use_channels_last

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "same": {"views.sampling": "same"},
    "none": {"views.ops": []},
}
GAPS = {"random-same": ("default", "same"), "da-none": ("default", "none")}
# Val clip groups by length in frames: one evaluation patch (101 frames ≈ 1 s; shorter clips are tiled
# to one patch), up to 3 s, longer.
GROUPS = {"all": (0, 10**9), "<=1s": (0, 101), "1-3s": (102, 301), ">3s": (302, 10**9)}
RUN_FIELDS = ["variant", "seed", "epoch", "group", "clips", "bacc", "acc", "loss"]


def base_config(seed: int, epochs: int, precision: str) -> RunConfig:
    """The shipped CPU setting, one thread per run so that runs go side by side. The pre-training's own
    kNN runs at the last epoch only; this script evaluates at its own epochs."""
    return cpu_small({"seed": seed, "train.epochs": epochs, "train.batch_size": 128, "train.tau": 0.2,
                      "train.num_threads": 1, "train.device": "cpu", "train.precision": precision,
                      "eval.every": epochs})


def eval_epochs(epochs: int, every: int) -> list[int]:
    """1, 2, then every ``every`` epochs, and the last."""
    return sorted({e for e in (1, 2, *range(every, epochs + 1, every), epochs) if e <= epochs})


def evaluate(model: torch.nn.Module, val, mean: float, std: float, k: int,
             amp_dtype: torch.dtype | None) -> dict[str, tuple[int, float, float]]:
    """{group: (clips, balanced accuracy, accuracy)} of the val kNN, per clip-length group."""
    z, clip_index = embed_patches(model, val, mean, std, amp_dtype=amp_dtype)
    _, pred, _ = knn_predict(z, clip_index, val.labels[clip_index], k)  # clips in val order (ids 0..n-1)
    out = {}
    for group, (lo, hi) in GROUPS.items():
        sel = (val.lengths >= lo) & (val.lengths <= hi)
        out[group] = (int(sel.sum()), balanced_accuracy(val.labels[sel], pred[sel]), accuracy(val.labels[sel], pred[sel]))
    return out


def run_one(variant: str, seed: int, epochs: int, every: int, precision: str, work: Path) -> Path:
    """Pre-train one variant and seed; write its rows when it finishes (atomic rename)."""
    cfg = base_config(seed, epochs, precision).replace(VARIANTS[variant])
    store = open_store(cfg.data)
    val = store.splits["val"].to_torch()
    probe = build_model(cfg)
    if use_channels_last(cfg.train, torch.device("cpu"), cfg.model.encoder):  # as the pre-training's model
        probe = probe.to(memory_format=torch.channels_last)
    wanted = set(eval_epochs(epochs, every))
    rows: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        if metrics["epoch"] not in wanted:
            return
        probe.load_state_dict(state["model"])
        dtype = resolve_amp_dtype(cfg.train.precision, torch.device("cpu"))  # the pre-training's own kNN uses it
        for group, (n, bacc, acc) in evaluate(probe, val, store.mean, store.std, cfg.eval.knn_k, dtype).items():
            rows.append({"variant": variant, "seed": seed, "epoch": metrics["epoch"], "group": group, "clips": n,
                         "bacc": bacc, "acc": acc, "loss": metrics["loss"]})
        if "knn_acc" in metrics and abs(metrics["knn_acc"] - rows[-4]["bacc"]) > 1e-12:  # warn, keep the run
            print(f"warning: {variant} seed {seed}: per-clip kNN {rows[-4]['bacc']} differs from the "
                  f"pre-training's own {metrics['knn_acc']}", file=sys.stderr, flush=True)
        write_csv(work / f"{variant}-seed{seed}.partial", rows)  # progress so far; not read by the tables

    started = time.perf_counter()
    pretrain(cfg, store, report=report)
    path = work / f"{variant}-seed{seed}.csv"
    with atomic.replacing(path) as tmp:
        write_csv(tmp, rows)
    (work / f"{variant}-seed{seed}.partial").unlink(missing_ok=True)
    print(f"{variant} seed {seed}: {epochs} epochs in {(time.perf_counter() - started) / 60:.1f} min, "
          f"final kNN {rows[-4]['bacc']:.3f}", flush=True)
    return path


# ----------------------------------------------------------------------------- statistics and outputs


def load_runs(work: Path, partial: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of every finished run, and the seeds whose variants all finished (only those are used).
    ``partial``: unfinished runs count too, every run cut at the last evaluated epoch all of them reached."""
    rows, done = [], {}
    for path in sorted([*work.glob("*-seed*.csv"), *(work.glob("*-seed*.partial") if partial else [])]):
        with open(path, newline="") as f:
            part = list(csv.DictReader(f))
        for r in part:
            r.update(seed=int(r["seed"]), epoch=int(r["epoch"]), clips=int(r["clips"]),
                     **{k: float(r[k]) for k in ("bacc", "acc", "loss")})
        if part:
            done.setdefault(part[0]["seed"], set()).add(part[0]["variant"])
        rows += part
    seeds = sorted(s for s, v in done.items() if v >= set(VARIANTS))
    rows = [r for r in rows if r["seed"] in seeds]
    reached = {}
    for r in rows:
        reached[r["variant"], r["seed"]] = max(reached.get((r["variant"], r["seed"]), 0), r["epoch"])
    common = min(reached.values(), default=0)
    return [r for r in rows if r["epoch"] <= common], seeds


def metric_of(group: str) -> str:
    """The objective's balanced accuracy over all val clips; plain accuracy within a length group
    (a group holds 3-5 clips of a class, too few for per-class recall)."""
    return "bacc" if group == "all" else "acc"


def gap_rows(rows: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    at = {(r["variant"], r["seed"], r["epoch"], r["group"]): r for r in rows}
    epochs = sorted({r["epoch"] for r in rows})
    out = []
    for group in GROUPS:
        m = metric_of(group)
        for epoch in epochs:
            for variant in VARIANTS:
                vals = [at[variant, s, epoch, group][m] for s in seeds]
                mean, lo, hi, _ = t_interval(vals)
                out.append({"kind": "variant", "name": variant, "group": group, "metric": m, "epoch": epoch,
                            "n": len(vals), "mean": mean, "ci_low": lo, "ci_high": hi, "p": math.nan})
            for gap, (a, b) in GAPS.items():
                diffs = [at[a, s, epoch, group][m] - at[b, s, epoch, group][m] for s in seeds]
                mean, lo, hi, p = t_interval(diffs)
                out.append({"kind": "gap", "name": gap, "group": group, "metric": m, "epoch": epoch,
                            "n": len(diffs), "mean": mean, "ci_low": lo, "ci_high": hi, "p": p})
    return out


def plot(gaps: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8), sharex=True)
    colours = {"default": "C0", "same": "C1", "none": "C2", "random-same": "C3", "da-none": "C4"}
    for col, group in enumerate(GROUPS):
        for row, kind in enumerate(("variant", "gap")):
            ax = axes[row, col]
            for name in (VARIANTS if kind == "variant" else GAPS):
                pts = [g for g in gaps if g["kind"] == kind and g["name"] == name and g["group"] == group]
                x = [g["epoch"] for g in pts]
                ax.plot(x, [g["mean"] for g in pts], marker="o", ms=3, color=colours[name], label=name)
                ax.fill_between(x, [g["ci_low"] for g in pts], [g["ci_high"] for g in pts], color=colours[name],
                                alpha=0.2)
            if kind == "gap":
                ax.axhline(0, color="k", lw=0.8)
                ax.set_xlabel("epoch")
            metric = "balanced acc." if group == "all" else "accuracy"
            n = pts[0]["n"] if pts else 0
            ax.set_title(f"{'kNN' if kind == 'variant' else 'gap (paper: > 0)'}, val clips {group}\n"
                         f"{metric}, mean ± 95 % CI, n = {n} seeds", fontsize=9)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(gaps: list[dict[str, Any]], final: list[dict[str, Any]], seeds: list[int], clips: dict[str, int],
           args: argparse.Namespace, commit: str, last: int) -> str:
    lines = [
        "# Paper gaps against epoch and clip length (written by `python -m experiments.paper_gaps`)", "",
        f"Code at commit `{commit}`. Synthetic set `small`, seeds {seeds} (n = {len(seeds)}), runs of {args.epochs} "
        f"epochs (lr schedule) read up to epoch {last}" + (" (unfinished runs, --partial)" if last < args.epochs else "")
        + f", "
        f"precision {args.precision}, one thread per run. Val clips per group: "
        + ", ".join(f"{g} {n}" for g, n in clips.items()) + ".", "",
        f"## Last epoch ({last}): paired gaps, 95 % t-interval, Holm over the {len(final)} rows", "",
        "| gap | val clips | metric | n | mean | 95 % CI | p | p (Holm) |", "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {g['name']} | {g['group']} | {g['metric']} | {g['n']} | {g['mean']:+.3f} | "
              f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] | {g['p']:.3g} | {g['p_holm']:.3g} |" for g in final]
    lines += ["", "## Gaps against epoch (pointwise 95 % CI, not corrected)", "",
              "| epoch | " + " | ".join(f"{gap} {grp}" for gap in GAPS for grp in GROUPS) + " |",
              "|---|" + "---|" * (len(GAPS) * len(GROUPS))]
    at = {(g["name"], g["group"], g["epoch"]): g for g in gaps if g["kind"] == "gap"}
    for epoch in sorted({g["epoch"] for g in gaps}):
        cells = [at[gap, grp, epoch] for gap in GAPS for grp in GROUPS]
        lines.append(f"| {epoch} | " + " | ".join(f"{c['mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                                                for c in cells) + " |")
    lines += ["", "## Variants against epoch (val kNN, all clips, balanced accuracy, mean ± 95 % CI)", "",
              "| epoch | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    vat = {(g["name"], g["epoch"]): g for g in gaps if g["kind"] == "variant" and g["group"] == "all"}
    for epoch in sorted({g["epoch"] for g in gaps}):
        lines.append(f"| {epoch} | " + " | ".join(
            f"{vat[v, epoch]['mean']:.3f} ± {vat[v, epoch]['mean'] - vat[v, epoch]['ci_low']:.3f}" for v in VARIANTS)
            + " |")
    return "\n".join(lines) + "\n"


def aggregate(args: argparse.Namespace) -> int:
    rows, seeds = load_runs(args.work, args.partial)
    if not seeds:
        print(f"error: --work {args.work}: no seed has all of {', '.join(VARIANTS)} finished", file=sys.stderr)
        return 2
    gaps = gap_rows(rows, seeds)
    last = max(r["epoch"] for r in rows)
    final = [dict(g) for g in gaps if g["kind"] == "gap" and g["epoch"] == last]
    for g, p in zip(final, holm(np.array([g["p"] for g in final]))):
        g["p_holm"] = p
    clips = {r["group"]: r["clips"] for r in rows}
    recorded = args.work / "commit.txt"
    commit = recorded.read_text().strip() if recorded.exists() else git_commit(__file__)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "runs.csv", [{k: r[k] for k in RUN_FIELDS} for r in rows])
    write_csv(args.out / "gaps.csv", gaps)
    write_csv(args.out / "final.csv", final)
    plot(gaps, args.out / "paper_gaps.png")
    (args.out / "report.md").write_text(report(gaps, final, seeds, clips, args, commit, last))
    print(f"wrote {args.out}/runs.csv, gaps.csv, final.csv, paper_gaps.png, report.md (n = {len(seeds)} seeds)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.paper_gaps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--every", type=int, default=2, help="evaluate at epochs 1, 2 and every this many")
    ap.add_argument("--jobs", type=int, default=3, help="runs side by side (one thread each)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="resolved once (auto: bf16 where this CPU has it natively, else fp32) and pinned, so "
                         "that every run of a measurement uses the same arithmetic; the report names it")
    ap.add_argument("--work", type=Path, default=Path("runs/paper_gaps"), help="per-run results")
    ap.add_argument("--out", type=Path, default=Path("results/paper_gaps"))
    ap.add_argument("--aggregate-only", action="store_true", help="only write the tables from finished runs")
    ap.add_argument("--partial", action="store_true",
                    help="with --aggregate-only: include unfinished runs, all cut at the last epoch every run reached")
    args = ap.parse_args(argv)
    args.precision = resolve_precision(args.precision, torch.device("cpu"))
    if args.epochs < 2 or args.every < 1 or args.jobs < 1:
        print("error: --epochs must be >= 2, --every and --jobs >= 1", file=sys.stderr)
        return 2
    if not args.aggregate_only:
        args.work.mkdir(parents=True, exist_ok=True)
        if not (args.work / "commit.txt").exists():
            (args.work / "commit.txt").write_text(git_commit(__file__) + "\n")
        open_store(base_config(0, args.epochs, args.precision).data)  # build the store once, before the workers
        todo = [(v, s) for s in args.seeds for v in VARIANTS if not (args.work / f"{v}-seed{s}.csv").exists()]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("fork")) as pool:
            futures = [pool.submit(run_one, v, s, args.epochs, args.every, args.precision, args.work) for v, s in todo]
            for f in futures:
                f.result()
    return aggregate(args)


if __name__ == "__main__":
    sys.exit(main())
