"""The search driver: builds Ray Tune's ``Tuner`` for an experiment (or restores it) and runs it.

Optuna's TPE (seeded) proposes configs through ``searcher.StudySearch``, Ray Tune runs them as trials
with ASHA on the val kNN balanced accuracy (``knn_acc``, max), and every trial checkpoints every epoch
(``trainable``). Afterwards the driver writes the results table and the best config
(``results.write_results``) and prints the top trials.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

from uclser_tune import atomic
from uclser_tune.search.resources import GPU_NODE_WAIT_S, scale_out_trials, trial_resources
from uclser_tune.search.results import META_FILE
from uclser_tune.search.spaces import ENUMERATED, SearchSpace, SpaceError
from uclser_tune.search.state import StateError
from uclser_tune.search.study import claim
from uclser_tune.search.surrogate import Truth
from uclser_tune.versions import versions

SNAPSHOT_PERIOD = "auto"  # Ray's experiment snapshots: max(10 s, 19 x the last one's time) apart
REUSE_ACTORS = True  # a trial starts in an idle worker of a finished one: ~3 s less per trial start


def run(args: argparse.Namespace, space: SearchSpace, exp_dir: Path, meta: dict, base_cfg, truth: Truth | None,
        cluster_config: dict | None, resuming: bool) -> int:
    """The search, with this driver holding the experiment's lock. Everything that can refuse to run
    (an unusable snapshot, the data, trial resources, a GPU node that cannot run CUDA) comes before
    search.json is written, and the GPU node is asked for only after everything else was checked."""
    import ray
    from ray import tune

    from uclser_tune.data.store import open_store
    from uclser_tune.search import results
    from uclser_tune.search.console import make_console
    from uclser_tune.search.remote import GpuNodeError, wait_for_gpu_node
    from uclser_tune.search.resume import restorable
    from uclser_tune.search.searcher import StudySearch
    from uclser_tune.search.state import mark_lost_trials, restored_trials, storage_fs
    from uclser_tune.search.trainable import run_trial, surrogate_trial

    # Ray's experiment snapshot at its own period ("auto": at least 10 s apart and at most ~5 % of the
    # driver's time), not after every event: a snapshot rewrites the whole experiment's state, so one per
    # event made the driver's cost quadratic in the trials. A snapshot can then be seconds behind the
    # trials; Ray keeps every checkpoint (run_config) and the driver deletes only those that no snapshot
    # on disk can name (state.CheckpointPruner), so a resume from any snapshot finds its checkpoints.
    if not args.verbose:  # the console says what happens to the study's trials
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_PERIOD)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    StudySearch.experiment_dir = exp_dir
    try:
        resume, notes = restorable(exp_dir, meta)
    except StateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)

    if truth is None:
        print(f"data: {base_cfg.data.root} ({base_cfg.data.synth_size if base_cfg.data.root == 'synthetic' else ''})",
              file=sys.stderr)
        store = open_store(base_cfg.data)
        trial_fn = tune.with_parameters(run_trial, store=shipped_store(store, space, base_cfg.data.store_dtype))
    else:
        print(f"surrogate: scores planted by {truth.path}, no training", file=sys.stderr)
        trial_fn = tune.with_parameters(surrogate_trial, truth=truth)
    init = {"address": args.address} if args.address else {}
    if args.node_ip_address:
        init["_node_ip_address"] = args.node_ip_address
    ray.init(include_dashboard=False, log_to_driver=args.verbose, configure_logging=False, **init)
    try:
        cpus, gpus = trial_resources(args, space, ray.cluster_resources())
        if args.address and gpus and not ray.cluster_resources().get("GPU"):
            node = wait_for_gpu_node(GPU_NODE_WAIT_S, base_cfg.train.device)
            print(f"GPU node {node} is up" + ("" if base_cfg.train.device == "cpu" else " and sees CUDA"), file=sys.stderr)
        max_concurrent = args.max_concurrent or space.trials.get("max_concurrent")
        if args.address and not max_concurrent:
            max_concurrent = scale_out_trials(cluster_config, cpus, gpus, ray.cluster_resources())
        if max_concurrent:  # Ray keeps one trial pending for a custom searcher unless told (Tune's env var)
            os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max_concurrent))
        write_meta(exp_dir, meta)
        claim(exp_dir, meta, resuming)
    except (SpaceError, GpuNodeError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        ray.shutdown()
        return 2

    trainable = tune.with_resources(trial_fn, {"cpu": cpus, "gpu": gpus})
    if resume:
        StudySearch.restored_trials = restored_trials(exp_dir)
        for note in mark_lost_trials(exp_dir, StudySearch.restored_trials):
            print(f"warning: {note}", file=sys.stderr)
        print(f"resuming experiment {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=False, restart_errored=False,
                                   storage_filesystem=storage_fs())
    else:
        reporter = make_console(space, meta["num_samples"], args.verbose)
        tuner = tune.Tuner(trainable, run_config=run_config(exp_dir, reporter),
                           tune_config=tune_config(space, args, meta, cpus, max_concurrent, base_cfg.train.epochs))
    tuner.fit()
    summary = results.write_results(exp_dir)
    table = results.trials_table(exp_dir)
    print("\ntop trials (val kNN balanced accuracy at the last epoch):")
    print(results.top_table(table))
    counts = ", ".join(f"{n} {state}" for state, n in summary["status"].items())
    print(f"\ntrials: {summary['n']} ({counts}); {time.time() - started:.0f} s")
    print(f"experiment: {exp_dir}\nresults table: {summary['trials']}")
    if "best_config" in summary:
        print(f"best config: {summary['best_config']} (train it: python -m uclser_tune.train --config "
              f"{summary['best_config']})")
    print(f"TensorBoard: tensorboard --logdir {exp_dir}")
    return 0


def write_meta(exp_dir: Path, meta: dict) -> None:
    """search.json: what the experiment was started with, and the package versions."""
    atomic.write_text(exp_dir / META_FILE, json.dumps({**meta, "versions": versions()}, indent=1))


def tune_config(space: SearchSpace, args: argparse.Namespace, meta: dict, cpus: float, max_concurrent: int | None,
                epochs: int):
    """A grid enqueues its cells (the first ``num_samples``, all by default) in the study and ends when none
    is left (Ray's sample count: unbounded, so a resume can re-run failed cells); TPE and random run
    ``num_samples`` trials, the first of them the space's balanced start-up design (TPE's start-up trials
    are as many). ``max_concurrent`` is the searcher's own limit; ``run`` also makes it the number of
    trials Ray keeps pending (``TUNE_MAX_PENDING_TRIALS_PG``), which is what the autoscaler sees as demand."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from uclser_tune.search.searcher import StudySearch, StudySearchGenerator

    num_samples = meta["num_samples"]
    trial_overrides = {**meta["overrides"], "train.num_threads": max(1, int(cpus))}
    startup = space.startup_design(num_samples, args.seed)
    sampler = (optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=max(10, len(startup)))
               if space.sampler == "tpe" else optuna.samplers.RandomSampler(seed=args.seed))  # grid: all enqueued
    searcher = StudySearch(space=functools.partial(space.define_by_run, overrides=trial_overrides), metric="knn_acc",
                           mode="max", sampler=sampler, storage_url=meta["storage"], study_name=meta["study_name"],
                           grid_cells=space.grid_cells(args.seed)[:num_samples], startup=startup,
                           max_concurrent=max_concurrent)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=space.asha["grace_period"],
                               reduction_factor=space.asha["reduction_factor"])
                 if space.asha else FIFOScheduler())
    return tune.TuneConfig(
        search_alg=StudySearchGenerator(searcher),
        scheduler=scheduler, num_samples=-1 if space.sampler in ENUMERATED else num_samples, metric="knn_acc",
        mode="max", trial_dirname_creator=trial_dirname, reuse_actors=REUSE_ACTORS)


def run_config(exp_dir: Path, console=None):
    """Checkpoints: Ray deletes none (``num_to_keep=None``; it would delete by its own count, whatever
    the snapshots on disk name, and would force a snapshot every ``num_to_keep`` checkpoints of a trial).
    ``state.storage_fs`` deletes them once a whole snapshot no longer needs them, keeping the last two of
    a finished trial. Files reach the experiment dir whole and a snapshot only if it loads, so a kill
    never leaves a half-written one. A retried trial's logger files reach it before the retry
    (``state.LogsBeforeRetry``)."""
    from ray import tune

    from uclser_tune.search.state import LogsBeforeRetry, storage_fs

    return tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent), storage_filesystem=storage_fs(),
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[LogsBeforeRetry(), *([console] if console else [])], verbose=0 if console else 1,
    )


def trial_dirname(trial) -> str:
    """Short trial dirs (Ray's default name repeats the whole config)."""
    return f"trial_{trial.trial_id}"


def shipped_store(store, space: SearchSpace, dtype: str):
    """The store as it goes into Ray's object store: C-contiguous, in the trials' ``data.store_dtype`` when
    every trial has the same one (float16 halves what each node holds), else float32. A trial's
    ``to_torch`` then shares the node's copy instead of making its own (it copies to change the dtype or
    to make the frames contiguous)."""
    import dataclasses as dc

    import numpy as np

    shared = store.shareable()
    searched = "data.store_dtype" in space.params or any("data.store_dtype" in v for v in space.variants.values())
    target = "float32" if searched else dtype
    return dc.replace(shared, splits={n: dc.replace(s, frames=np.ascontiguousarray(s.frames, dtype=target))
                                      for n, s in shared.splits.items()})
