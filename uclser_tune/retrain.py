"""``python -m uclser_tune.retrain EXPERIMENT_DIR``: retrain the search's best config(s) with several seeds.

Takes the best config of a finished (or still running) search, scope: the best val kNN balanced
accuracy at the final rung (the last epoch of trials that ran their whole budget), optionally the top
K, and retrains each from scratch with seeds 0..N-1, next to the paper's default config (the
experiment's fixed settings, everything the space searched at the paper's values) with the same seeds.
Each run is evaluated by kNN (val and test), linear evaluation and both fine-tuning tasks (these start
from the best-val-kNN checkpoint as in the reference, or with --downstream-from last from the final
one; runs.csv records which, per task as ``<task>.checkpoint`` and ``<task>.checkpoint_epoch``); the same
encoder trained from random initialisation gives the supervised baseline. Per-seed results go to
``runs.csv``; ``summary.csv`` / ``summary.md`` give mean ± sd per metric and the difference to the
default with a paired t-test over seeds.

Everything lands in EXPERIMENT_DIR/retrain (or --out): one folder per config and seed with its
pre-training checkpoint, metrics and results. Re-running the same command skips finished stages and
continues an interrupted pre-training from its last checkpoint. With --address, the runs are Ray
tasks on that cluster (the output folder must be on storage every node reaches).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uclser_tune import atomic
from uclser_tune.config import ConfigError, RunConfig, config_from_dict, parse_overrides
from uclser_tune.data.fsd import DatasetError
from uclser_tune.evaluation.stats import holm, t_interval
from uclser_tune.runs import check_data
from uclser_tune.search.results import ExperimentError
from uclser_tune.training.downstream import CHECKPOINT_FILES, TASKS

DEFAULT = "default"
RANDOM_INIT = "random_init"
HEADLINE = ["knn_val", "knn_test", *TASKS]
DESCRIPTIONS = {
    "knn_val": "val kNN balanced accuracy, last epoch",
    "knn_test": "test kNN balanced accuracy of the final encoder (the test split is its own bank)",
    "linear": "linear evaluation: test balanced accuracy at the best-val epoch",
    "finetune_noisy": "fine-tuning on the noisy set: test balanced accuracy at the best-val epoch",
    "finetune_clean": "fine-tuning on 85 % of the clean set: test balanced accuracy at the best-val epoch",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uclser_tune.retrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", type=Path, help="experiment dir of a search (runs/<name>)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per config: 0..N-1 (default 3)")
    p.add_argument("--top", type=int, default=1, help="retrain the K best complete trials (default 1)")
    p.add_argument("--epochs", type=int, default=500,
                   help="pre-training epochs (default 500, the paper's full schedule; lr milestones scale)")
    p.add_argument("--downstream-epochs", type=int,
                   help="epochs of linear evaluation and fine-tuning (default: the config's, 200)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every retrained config, e.g. --set train.device=cuda")
    p.add_argument("--no-default", action="store_true", help="skip the paper's default config")
    p.add_argument("--downstream-from", choices=list(CHECKPOINT_FILES), default="best",
                   help="pre-training checkpoint the downstream tasks start from: best val kNN (default, as the "
                        "reference) or last epoch; recorded per task, a task from the other one is run again")
    p.add_argument("--out", type=Path, help="output dir (default: EXPERIMENT_DIR/retrain)")
    p.add_argument("--address", help="Ray cluster to run the jobs on as tasks ('auto' on a cluster node)")
    p.add_argument("--node-ip-address", help="IP of this node for Ray (tests use 127.0.0.x)")
    p.add_argument("--cpus-per-job", type=float, default=1, help="CPUs per Ray task (default 1)")
    p.add_argument("--gpus-per-job", type=float, default=0, help="GPUs per Ray task, fractional allowed (default 0)")
    return p


# ---------------------------------------------------------------------------------------------- plan
def candidates(exp_dir: Path, top: int, with_default: bool) -> dict[str, RunConfig]:
    """name → config: the top-K complete trials by last-epoch val kNN, then the paper's default."""
    from uclser_tune.search import results

    meta = results.read_meta(exp_dir)
    parquet = exp_dir / "trials.parquet"
    try:
        table = pd.read_parquet(parquet) if parquet.exists() else results.trials_table(exp_dir)
    except KeyError:  # optuna: no study of that name yet (the search was stopped while starting)
        table = pd.DataFrame()
    done = table[table["status"] == "COMPLETE"] if len(table) else table
    if done.empty:
        raise ConfigError(f"{exp_dir}: no complete trial yet; nothing to retrain")
    best = done.sort_values("last_knn", ascending=False).head(top)
    out = {f"trial_{int(r.optuna_number)}": config_from_dict(_yaml(r.config_yaml)) for r in best.itertuples()}
    if with_default:
        out[DEFAULT] = default_config(exp_dir, meta, next(iter(out.values())))
    return out


def default_config(exp_dir: Path, meta: dict[str, Any], best: RunConfig) -> RunConfig:
    """The experiment's fixed settings with everything the space searched at the paper's values: the
    space's base config. If the space file is gone, the best config with the views, τ and batch size
    reset to the paper's."""
    from uclser_tune.search.spaces import SpaceError, load_space

    try:
        return load_space(meta["space"]).build(meta["overrides"])
    except SpaceError as err:
        print(f"warning: {err}; default = the best config with the paper's views, tau and batch size",
              file=sys.stderr)
        paper = config_from_dict({})
        return config_from_dict({**best.to_dict(), "views": paper.to_dict()["views"]}).replace(
            {"train.tau": paper.train.tau, "train.batch_size": paper.train.batch_size})


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text)


def plan(cands: dict[str, RunConfig], seeds: int, overrides: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """One job per (config, seed), and per seed one random-init baseline for every encoder in play.
    Seed-major order, so that an interrupted retraining already holds comparable seeds."""
    jobs = []
    encoders = {}
    for cfg in cands.values():
        encoders.setdefault((cfg.model.encoder, cfg.model.width), cfg)
    for seed in range(seeds):
        for name, cfg in cands.items():
            jobs.append(_job(name, "pretrained", cfg, seed, overrides, out))
        for (encoder, width), cfg in encoders.items():
            name = RANDOM_INIT if len(encoders) == 1 else f"{RANDOM_INIT}_{encoder}_w{width:g}"
            jobs.append(_job(name, "random", cfg, seed, overrides, out))
    return jobs


def _job(name: str, init: str, cfg: RunConfig, seed: int, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    cfg = cfg.replace({**overrides, "seed": seed})
    return {"name": name, "init": init, "seed": seed, "config": cfg.to_dict(), "dir": str(out / name / f"seed_{seed}")}


# ----------------------------------------------------------------------------------------------- run
def run_job(job: dict[str, Any], store: Any) -> dict[str, Any]:
    """Pre-train (unless random init), then kNN on val and test and the downstream tasks. Every stage
    writes its result into the job dir and is skipped when found there, so a re-run continues."""
    import torch

    from uclser_tune.runs import RunDir, epoch_line
    from uclser_tune.training import build_model, pretrain
    from uclser_tune.training.downstream import (
        DownstreamLossError,
        NoTrainingClipsError,
        run_encoder,
        run_task,
    )

    cfg = config_from_dict(job["config"])
    path = Path(job["dir"])
    label = f"{job['name']} seed {job['seed']}"
    run = RunDir(path, cfg, resume=True)
    row: dict[str, Any] = {"name": job["name"], "init": job["init"], "seed": job["seed"],
                           "encoder": cfg.model.encoder, "width": cfg.model.width, "epochs": cfg.train.epochs}
    if job["init"] == "pretrained":
        if run.state is None or run.state["epoch"] < cfg.train.epochs:
            def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
                run.report(metrics, state)
                run.state = state
                print(f"[{label}] {epoch_line(metrics, cfg.train.epochs)}", flush=True)

            pretrain(cfg, store, report=report, resume=run.state)
        state = run.state
        encoder = run_encoder(path, job["downstream_from"])
        row["knn_val"] = state["history"][-1].get("knn_acc", math.nan)
        row["knn_val_best"] = max((m["knn_acc"] for m in state["history"] if "knn_acc" in m), default=math.nan)
        model = build_model(cfg)
        model.load_state_dict(state["model"])
    else:
        encoder = None
        torch.manual_seed(cfg.seed)
        model = build_model(cfg)  # the random encoder's kNN is the floor the pre-training must beat
    stages = [("knn", None)] + [(t, t) for t in TASKS if encoder is not None or t != "linear"]
    for stage, task in stages:
        done = path / f"{stage}.json"
        if task is not None and encoder is not None and done.exists() \
                and json.loads(done.read_text()).get("checkpoint") != encoder.checkpoint:
            done.unlink()  # from another checkpoint, or none recorded: run again
        if not done.exists():
            began = time.perf_counter()
            if task is None:
                if job["init"] == "random":
                    row["knn_val"] = _knn(model, store, "val", cfg)
                result = {"knn_val": row["knn_val"], "knn_test": _knn(model, store, "test", cfg)}
                if "knn_val_best" in row:
                    result["knn_val_best"] = row["knn_val_best"]
            else:
                try:
                    result = run_task(task, cfg, store, encoder).to_row()
                except (NoTrainingClipsError, DownstreamLossError) as err:  # recorded, the other stages go on
                    result = {"test_bacc": math.nan, "error": str(err),
                              "checkpoint": encoder.checkpoint if encoder is not None else "none"}
            _write_json(done, result)
            print(f"[{label}] {stage} " + (f"skipped: {result['error']}" if "error" in result else
                                           f"done in {time.perf_counter() - began:.0f} s"), flush=True)
        result = json.loads(done.read_text())
        if task is None:
            row.update(result)
        else:
            row[task] = result["test_bacc"]
            if "error" in result:
                row[f"{task}.error"] = result["error"]
            row.update({f"{task}.{k}": v for k, v in result.items() if k in
                        ("test_bacc_last", "test_bacc_mean_last", "test_acc", "val_bacc", "best_epoch", "frozen_bn",
                         "checkpoint", "checkpoint_epoch")})
    _write_json(path / "result.json", row)
    return row


def _finished(job: dict[str, Any]) -> bool:
    """The job's result.json is there and its downstream tasks record that they started from the
    requested checkpoint."""
    path = Path(job["dir"]) / "result.json"
    if not path.exists():
        return False
    row = json.loads(path.read_text())
    return job["init"] == "random" or all(row.get(f"{t}.checkpoint") == job["downstream_from"] for t in TASKS
                                          if t in row)


def _knn(model: Any, store: Any, split: str, cfg: RunConfig) -> float:
    import torch

    from uclser_tune.evaluation.patches import evaluate_knn
    from uclser_tune.training.runtime import resolve_device

    device = resolve_device(cfg.train.device)
    clips = store.splits[split].to_torch(dtype=torch.float32).to(device)
    return evaluate_knn(model.to(device), clips, store.mean, store.std, k=cfg.eval.knn_k, hop=cfg.eval.patch_hop,
                        batch_size=cfg.eval.batch_size)["balanced_acc"]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, default=float))


# ------------------------------------------------------------------------------------------- summary
def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config and metric: mean, sd, n, and the difference to the default with its 95 % interval and a
    paired t-test over the seeds both have (NaN with fewer than 2 common seeds or identical differences),
    its p Holm-corrected over the config's metrics."""

    rows = []
    metrics = [m for m in HEADLINE if m in runs]
    base = runs[(runs["name"] == DEFAULT)].set_index("seed")
    for name, group in runs.groupby("name", sort=False):
        g = group.set_index("seed")
        for metric in metrics:
            values = g[metric].dropna()
            if values.empty:
                continue
            row = {"name": name, "metric": metric, "mean": values.mean(), "sd": values.std(ddof=1),
                   "n": len(values), "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
            if name != DEFAULT and metric in base:
                common = values.index.intersection(base[metric].dropna().index)
                if len(common):
                    delta = values[common] - base.loc[common, metric]
                    row["diff"], row["ci_low"], row["ci_high"], row["p"] = t_interval(delta.to_numpy())
            rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):  # Holm over the metrics of each config against the default
        out["p_holm"] = np.nan
        for name, idx in out.groupby("name").groups.items():
            out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
    return out


def markdown(summary: pd.DataFrame, scope: str) -> str:
    def cell(r: pd.Series) -> str:
        text = f"{r['mean']:.4f} ± {r['sd']:.4f}" if r["n"] > 1 else f"{r['mean']:.4f}"
        if not math.isnan(r["diff"]):
            text += f" ({r['diff']:+.4f}" + (f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], p_holm={r['p_holm']:.3g})"
                                             if not math.isnan(r["p"]) else ")")
        return text

    wide = summary.assign(cell=summary.apply(cell, axis=1)).pivot(index="name", columns="metric", values="cell")
    wide = wide.reindex(index=summary["name"].unique(), columns=[m for m in HEADLINE if m in wide.columns]).fillna("—")
    n = summary.groupby("name")["n"].max()
    wide.insert(0, "seeds", n)
    lines = [f"# Retraining: {scope}", "",
             ("Balanced accuracy, mean ± sd over seeds; in brackets the mean paired difference to `default` "
              "(the paper's settings), its 95 % t-interval and the paired t-test's p over seeds, Holm-corrected "
              "over the metrics of that config."), "",
             wide.reset_index().to_markdown(index=False), "", "Metrics:"]
    lines += [f"- `{m}`: {DESCRIPTIONS[m]}" for m in HEADLINE if m in wide.columns]
    lines.append(f"- `{RANDOM_INIT}`: the same encoder trained from random initialisation (supervised baseline); "
                 "its kNN is that of the untrained encoder.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp_dir = args.experiment.resolve()
    out = (args.out or exp_dir / "retrain").resolve()
    try:
        if not exp_dir.is_dir():
            raise ConfigError(f"{exp_dir}: no such experiment dir")
        for flag, value, least in (("--seeds", args.seeds, 1), ("--top", args.top, 1), ("--epochs", args.epochs, 1),
                                   ("--downstream-epochs", args.downstream_epochs, 1),
                                   ("--gpus-per-job", args.gpus_per_job, 0)):
            if value is not None and value < least:
                raise ConfigError(f"{flag}: got {value:g}; expected >= {least}")
        if args.cpus_per_job <= 0:
            raise ConfigError(f"--cpus-per-job: got {args.cpus_per_job:g}; expected > 0")
        overrides = {**parse_overrides(args.overrides), "train.epochs": args.epochs}
        if args.downstream_epochs is not None:
            overrides["downstream.epochs"] = args.downstream_epochs
        cands = candidates(exp_dir, args.top, not args.no_default)
        jobs = [{**job, "downstream_from": args.downstream_from} for job in plan(cands, args.seeds, overrides, out)]
        for job in jobs:  # a job dir of another config is refused before anything runs (its results are kept)
            written = Path(job["dir"]) / "config.yaml"
            if written.exists() and written.read_text() != config_from_dict(job["config"]).to_yaml():
                raise ConfigError(f"{job['dir']}: the config differs from the one this retraining started with "
                                  f"({written}); re-run with the same options or choose another --out")
        for cfg in cands.values():
            check_data(cfg.data)
    except (ConfigError, DatasetError, ExperimentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    scope = ("best val kNN balanced accuracy at the final rung (last epoch of complete trials)"
             + (f", top {args.top}" if args.top > 1 else ""))
    _write_json(out / "plan.json", {"experiment": str(exp_dir), "scope": scope, "seeds": args.seeds,
                                    "overrides": overrides, "candidates": list(cands)})
    finished = [j for j in jobs if _finished(j)]
    todo = [j for j in jobs if j not in finished]
    print(f"retraining {', '.join(cands)} + {RANDOM_INIT} × {args.seeds} seeds, {args.epochs} epochs: "
          f"{len(jobs)} jobs, {len(finished)} already done; output {out}", file=sys.stderr)
    rows = {j["dir"]: json.loads((Path(j["dir"]) / "result.json").read_text()) for j in finished}
    if todo:
        from uclser_tune.data.store import open_store

        store = open_store(config_from_dict(todo[0]["config"]).data)
        if args.address:
            from uclser_tune.search.remote import map_on_ray

            results = map_on_ray(run_job, todo, store.shareable(), address=args.address, cpus=args.cpus_per_job,
                                 gpus=args.gpus_per_job, node_ip=args.node_ip_address)
        else:
            results = ((job, run_job(job, store), "local") for job in todo)
        for i, (job, row, node) in enumerate(results, len(finished) + 1):
            rows[job["dir"]] = {**row, "node": node}
            print(f"[{i}/{len(jobs)}] {job['name']} seed {job['seed']} finished", file=sys.stderr)
    runs = pd.DataFrame([rows[j["dir"]] for j in jobs])
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarise(runs)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(summary, scope))
    print((out / "summary.md").read_text())
    print(f"per-seed results: {out / 'runs.csv'}; summary: {out / 'summary.csv'}, {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
