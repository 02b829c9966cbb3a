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
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

from uclser_tune.config import ConfigError, parse_overrides
from uclser_tune.search.spaces import SearchSpace, SpaceError, load_space

REUSE_ACTORS = True  # a trial starts in an idle worker of a finished one: ~3 s less per trial start
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
    p.add_argument("--grace-period", type=int, help="ASHA's grace period in epochs (default: the space's)")
    p.add_argument("--reduction-factor", type=float, help="ASHA's reduction factor, > 1 (default: the space's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a run-config key for every trial (wins over the space), e.g. to size a GPU space "
                        "for a CPU: --set model.width=0.25 --set data.synth_size=small")
    p.add_argument("--smoke", action="store_true", help="tiny data, tiny models, few batches: a quick end-to-end check")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (trial seeds come from the space)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space = with_asha(load_space(args.space), args.grace_period, args.reduction_factor)
        check_args(args, space)
        cli_overrides = parse_overrides(args.overrides)
    except (SpaceError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.name or space.path.stem
    exp_dir = (Path(args.storage_path) / name).resolve()
    epochs = args.max_epochs or space.epochs
    overrides = {**(SMOKE if args.smoke else {}), **cli_overrides, "train.epochs": epochs, "eval.every": 1}
    if args.data:
        overrides["data.root"] = args.data
    try:
        base_cfg = space.build(overrides)
    except Exception as err:  # noqa: BLE001 - a bad override is a usage error
        print(f"error: {err}", file=sys.stderr)
        return 2
    num_samples = args.num_samples or (space.grid_size() if space.sampler == "grid" else space.trials["num_samples"])
    if args.smoke and not args.num_samples:
        num_samples = min(num_samples, 6)
    meta_path = exp_dir / "search.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["space_digest"] != space.digest or meta["overrides"] != overrides:
            print(f"error: {exp_dir} was started with another space file or options ({meta['space']}, "
                  f"{meta['overrides']}); use another --name to start a new experiment", file=sys.stderr)
            return 2
        # Ray's restored experiment keeps its trial count and the restored searcher its seeded sampler
        changed = {k: (meta[k], v) for k, v in {"num_samples": num_samples, "sampler_seed": args.seed,
                                                "asha": space.asha}.items() if k in meta and meta[k] != v}
        if changed:
            print(f"error: {exp_dir} was started with " + ", ".join(f"{k} {old} (now {new})" for k, (old, new)
                                                                  in changed.items())
                  + "; a resumed search keeps them: re-run with the original values, or use another --name",
                  file=sys.stderr)
            return 2
    return run(args, space, exp_dir, overrides, base_cfg, num_samples)


def with_asha(space: SearchSpace, grace_period: int | None, reduction_factor: float | None) -> SearchSpace:
    """The space with ASHA's settings from the command line (a space without ASHA gets it with both)."""
    if grace_period is None and reduction_factor is None:
        return space
    asha = dict(space.asha or {})
    if grace_period is not None:
        asha["grace_period"] = grace_period
    if reduction_factor is not None:
        asha["reduction_factor"] = reduction_factor
    if set(asha) != {"grace_period", "reduction_factor"}:
        raise SpaceError(f"{space.path}: has no ASHA settings; give both --grace-period and --reduction-factor")
    if asha["grace_period"] < 1 or asha["reduction_factor"] <= 1:
        raise SpaceError(f"--grace-period must be >= 1 and --reduction-factor > 1; got {asha['grace_period']} "
                         f"and {asha['reduction_factor']:g}")
    return dataclasses.replace(space, asha=asha)


def check_args(args: argparse.Namespace, space: SearchSpace) -> None:
    """Numbers from the command line get the space file's checks (before Ray starts)."""
    for flag, value in (("--num-samples", args.num_samples), ("--max-epochs", args.max_epochs),
                        ("--max-concurrent", args.max_concurrent)):
        if value is not None and value < 1:
            raise SpaceError(f"{flag}: got {value}; expected a positive integer")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise SpaceError(f"--cpus-per-trial: got {args.cpus_per_trial:g}; expected > 0")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise SpaceError(f"--gpus-per-trial: got {args.gpus_per_trial:g}; expected >= 0")
    epochs = args.max_epochs or space.epochs
    if space.asha and space.asha["grace_period"] > epochs:
        raise SpaceError(f"--max-epochs {epochs} is less than the space's asha.grace_period "
                         f"({space.asha['grace_period']}); ASHA needs grace_period <= the epoch budget")


def trial_resources(args: argparse.Namespace, space: SearchSpace, cluster: dict[str, float]) -> tuple[float, float]:
    """CPUs and GPUs per trial. On a cluster (``--address``) the request stands even when no node has it
    yet (the autoscaler adds GPU workers); on a local Ray a GPU request without a GPU falls back to CPU
    and a request larger than the machine is refused (Ray would wait for it forever). ``--smoke`` asks
    for 1 CPU and at most the GPUs there are."""
    cpus = args.cpus_per_trial or (1 if args.smoke else space.resources.get("cpu", 1))
    gpus = space.resources.get("gpu", 0) if args.gpus_per_trial is None else args.gpus_per_trial
    have_cpus, have_gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if args.smoke:
        gpus = min(gpus, have_gpus)
    if args.address:
        return cpus, gpus
    if gpus and not have_gpus:
        print("warning: no GPU in this Ray cluster; running trials on CPU", file=sys.stderr)
        gpus = 0
    if cpus > have_cpus or gpus > have_gpus:
        raise SpaceError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs but this machine's Ray has "
                         f"{have_cpus:g} CPUs and {have_gpus:g} GPUs; pass --cpus-per-trial / --gpus-per-trial "
                         f"that fit (or --smoke)")
    return cpus, gpus


def run(args: argparse.Namespace, space: SearchSpace, exp_dir: Path, overrides: dict, base_cfg, num_samples: int) -> int:
    import ray
    from ray import tune

    from uclser_tune.data.store import open_store
    from uclser_tune.search import results
    from uclser_tune.search.state import StateError, prepare_resume
    from uclser_tune.search.trainable import run_trial

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # Ray's experiment snapshot: at most 5 s stale
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    storage = args.storage_url or "journal:optuna.journal"
    resume = tune.Tuner.can_restore(str(exp_dir))
    try:
        if resume:
            for note in prepare_resume(exp_dir):
                print(f"warning: {note}", file=sys.stderr)
        elif (exp_dir / results.META_FILE).exists():
            n = len(results.open_study(exp_dir, {"study_name": exp_dir.name, "storage": storage}).trials)
            if n:
                raise StateError(f"{exp_dir}: the Optuna study has {n} trials but Ray saved no experiment state "
                                 f"to resume them (killed at start-up?); use another --name to start a new experiment")
    except StateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyError:  # no study of that name yet: nothing to resume
        pass
    exp_dir.mkdir(parents=True, exist_ok=True)
    meta = {"space": str(space.path), "space_digest": space.digest, "overrides": overrides, "storage": storage,
            "study_name": exp_dir.name, "sampler_seed": args.seed, "num_samples": num_samples, "asha": space.asha,
            "versions": versions()}
    tmp = exp_dir / f".{results.META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(exp_dir / results.META_FILE)  # atomic: a kill never leaves a truncated search.json

    print(f"data: {base_cfg.data.root} ({base_cfg.data.synth_size if base_cfg.data.root == 'synthetic' else ''})",
          file=sys.stderr)
    store = open_store(base_cfg.data)
    init = {"address": args.address} if args.address else {}
    if args.node_ip_address:
        init["_node_ip_address"] = args.node_ip_address
    ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False, **init)
    try:
        cpus, gpus = trial_resources(args, space, ray.cluster_resources())
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        ray.shutdown()
        return 2
    max_concurrent = args.max_concurrent or space.trials.get("max_concurrent")

    trainable = tune.with_resources(tune.with_parameters(run_trial, store=store.shareable()), {"cpu": cpus, "gpu": gpus})
    if resume:
        print(f"resuming experiment {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(trainable, run_config=run_config(exp_dir), tune_config=tune_config(
            space, args, overrides, cpus, num_samples, max_concurrent, base_cfg.train.epochs, exp_dir, storage))
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


def tune_config(space: SearchSpace, args: argparse.Namespace, overrides: dict, cpus: float, num_samples: int,
                max_concurrent: int | None, epochs: int, exp_dir: Path, storage: str):
    """A grid enqueues its cells (the first ``num_samples``, all by default) in the study and ends when none
    is left (Ray's sample count: unbounded, so a resume can re-run failed cells); TPE and random run
    ``num_samples`` trials."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from uclser_tune.search import results
    from uclser_tune.search.searcher import StudySearch, StudySearchGenerator

    trial_overrides = {**overrides, "train.num_threads": max(1, int(cpus))}
    sampler = (optuna.samplers.TPESampler(seed=args.seed) if space.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=args.seed))  # a grid's cells are all enqueued
    searcher = StudySearch(space=functools.partial(space.define_by_run, overrides=trial_overrides), metric="knn_acc",
                           mode="max", sampler=sampler, storage=results.storage_from(storage, exp_dir),
                           study_name=exp_dir.name, grid_cells=space.grid_cells()[:num_samples])
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=space.asha["grace_period"],
                               reduction_factor=space.asha["reduction_factor"])
                 if space.asha else FIFOScheduler())
    return tune.TuneConfig(
        search_alg=StudySearchGenerator(ConcurrencyLimiter(searcher, max_concurrent) if max_concurrent else searcher),
        scheduler=scheduler, num_samples=-1 if space.sampler == "grid" else num_samples, metric="knn_acc",
        mode="max", trial_dirname_creator=trial_dirname, reuse_actors=REUSE_ACTORS)


def run_config(exp_dir: Path):
    """Checkpoints: the last two per trial. Ray's experiment snapshot can lag the newest checkpoint by one
    (it is written after the checkpoint is registered); keeping only one would delete the checkpoint a
    snapshot taken just before points to, and a resume after a kill would then fail to restore it."""
    from ray import tune

    return tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent),
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="training_iteration",
                                                checkpoint_score_order="max"),
        verbose=1,
    )


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
