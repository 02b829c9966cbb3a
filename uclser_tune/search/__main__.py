"""``python -m uclser_tune.search --space augs.yaml``: the hyperparameter search.

Optuna's TPE (seeded) proposes configs from the space file, Ray Tune runs them as trials with ASHA on
the val kNN balanced accuracy (``knn_acc``, max), every trial checkpoints every epoch. The experiment
dir (``--storage-path``/``--name``) holds Ray's state, the Optuna study (a journal file, or
``--storage-url``), ``trials.parquet``, ``best_config.yaml`` and TensorBoard logs. Re-running the same
command after a crash or a kill resumes the same experiment and study: finished trials are not
re-run, interrupted ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

from uclser_tune.search.spaces import SpaceError, load_space

SMOKE = {"data.synth_size": "tiny", "model.width": 0.125, "model.proj_hidden": 64, "model.proj_dim": 32,
         "train.max_batches_per_epoch": 3, "eval.knn_k": 10}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uclser_tune.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True,
                   help="search-space YAML; a bare name (augs.yaml, tau_batch.yaml, paper_ablations.yaml, "
                        "smoke.yaml) is looked up in search_spaces/")
    p.add_argument("--data", help="FSDnoisy18k-layout folder or 'synthetic' (default: the space's data.root, "
                                  "else the embedded synthetic set, generated and cached on first use)")
    p.add_argument("--name", help="experiment name (default: the space file's stem)")
    p.add_argument("--storage-path", default="runs", help="where experiment dirs live (default: runs/)")
    p.add_argument("--num-samples", type=int, help="number of trials (default: the space's trials.num_samples)")
    p.add_argument("--max-epochs", type=int, help="epoch budget per trial = ASHA's max_t (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractional allowed (default: the space's)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the space's)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--address", help="Ray cluster to join ('auto' for the cluster this node belongs to)")
    p.add_argument("--node-ip-address", help="IP of this node for a local Ray (tests use 127.0.0.2)")
    p.add_argument("--storage-url", help="Optuna RDB URL shared by many nodes (default: a journal file in the "
                                         "experiment dir); e.g. postgresql://user@host/db, password from ~/.pgpass")
    p.add_argument("--smoke", action="store_true", help="tiny data, tiny models, few batches: a quick end-to-end check")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (trial seeds come from the space)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space = load_space(args.space)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.name or space.path.stem
    exp_dir = (Path(args.storage_path) / name).resolve()
    epochs = args.max_epochs or space.epochs
    overrides = {**(SMOKE if args.smoke else {}), "train.epochs": epochs, "eval.every": 1}
    if args.data:
        overrides["data.root"] = args.data
    try:
        base_cfg = space.build(overrides)
    except Exception as err:  # noqa: BLE001 - a bad override is a usage error
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta_path = exp_dir / "search.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["space_digest"] != space.digest or meta["overrides"] != overrides:
            print(f"error: {exp_dir} was started with another space file or options ({meta['space']}, "
                  f"{meta['overrides']}); use another --name to start a new experiment", file=sys.stderr)
            return 2
    return run(args, space, exp_dir, overrides, base_cfg)


def run(args, space, exp_dir: Path, overrides: dict, base_cfg) -> int:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from uclser_tune.data.store import open_store
    from uclser_tune.search import results
    from uclser_tune.search.searcher import StudySearch
    from uclser_tune.search.trainable import run_trial

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # Ray's experiment snapshot: at most 5 s stale
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage = args.storage_url or "journal:optuna.journal"
    meta = {"space": str(space.path), "space_digest": space.digest, "overrides": overrides, "storage": storage,
            "study_name": exp_dir.name, "sampler_seed": args.seed, "versions": versions()}
    (exp_dir / results.META_FILE).write_text(json.dumps(meta, indent=1))

    print(f"data: {base_cfg.data.root} ({base_cfg.data.synth_size if base_cfg.data.root == 'synthetic' else ''})",
          file=sys.stderr)
    store = open_store(base_cfg.data)
    init = {"address": args.address} if args.address else {}
    if args.node_ip_address:
        init["_node_ip_address"] = args.node_ip_address
    ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False, **init)
    gpus = space.resources.get("gpu", 0) if args.gpus_per_trial is None else args.gpus_per_trial
    if gpus and not ray.cluster_resources().get("GPU"):
        print("warning: no GPU in this Ray cluster; running trials on CPU", file=sys.stderr)
        gpus = 0
    cpus = args.cpus_per_trial or space.resources.get("cpu", 1)
    num_samples = args.num_samples or (space.grid_size() if space.sampler == "grid" else space.trials["num_samples"])
    if args.smoke and not args.num_samples:
        num_samples = min(num_samples, 6)
    max_concurrent = args.max_concurrent or space.trials.get("max_concurrent")

    trial_overrides = {**overrides, "train.num_threads": max(1, int(cpus))}
    sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=args.seed),
               "random": lambda: optuna.samplers.RandomSampler(seed=args.seed),
               "grid": lambda: optuna.samplers.GridSampler(space.grid(), seed=args.seed)}[space.sampler]()
    searcher = StudySearch(space=functools.partial(space.define_by_run, overrides=trial_overrides), metric="knn_acc", mode="max", sampler=sampler,
                           storage=results.storage_from(storage, exp_dir), study_name=exp_dir.name)
    search_alg = ConcurrencyLimiter(searcher, max_concurrent) if max_concurrent else searcher
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=base_cfg.train.epochs,
                               grace_period=space.asha["grace_period"],
                               reduction_factor=space.asha["reduction_factor"])
                 if space.asha else FIFOScheduler())
    trainable = tune.with_resources(tune.with_parameters(run_trial, store=store.shareable()), {"cpu": cpus, "gpu": gpus})
    run_config = tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent),
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="knn_acc",
                                                checkpoint_score_order="max"),
        verbose=1,
    )
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming experiment {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples, metric="knn_acc", mode="max",
            trial_dirname_creator=trial_dirname))
    tuner.fit()
    summary = results.write_results(exp_dir)
    table = results.trials_table(exp_dir)
    print("\ntop trials (val kNN balanced accuracy at the last epoch):")
    print(results.top_table(table))
    print(f"\ntrials: {summary['n']} {summary['status']}; {time.time() - started:.0f} s")
    print(f"experiment: {exp_dir}\nresults table: {summary['trials']}")
    if "best_config" in summary:
        print(f"best config: {summary['best_config']} (train it: python -m uclser_tune.train --config "
              f"{summary['best_config']})")
    print(f"TensorBoard: tensorboard --logdir {exp_dir}")
    return 0


def trial_dirname(trial) -> str:
    """Short trial dirs (Ray's default name repeats the whole config)."""
    return f"trial_{trial.trial_id}"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("uclser-tune", "torch", "ray", "optuna", "numpy", "librosa"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


if __name__ == "__main__":
    sys.exit(main())
