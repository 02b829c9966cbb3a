"""``python -m uclser_tune.search --space augs.yaml``: the hyperparameter search.

Optuna's TPE (seeded) proposes configs from the space file, Ray Tune runs them as trials with ASHA on
the val kNN balanced accuracy (``knn_acc``, max), every trial checkpoints every epoch. The experiment
dir (``--storage-path``/``--name``) holds Ray's state, the Optuna study (a journal file, or
``--storage-url``), ``trials.parquet``, ``best_config.yaml`` and TensorBoard logs. Re-running the same
command after a crash or a kill resumes the same experiment and study: finished trials are not
re-run, interrupted ones continue from their last checkpoint. One driver runs an experiment at a
time (``driver.lock``); every input is checked before the experiment dir is written, and a refusal
is one ``error:`` line with exit status 2.

On the head of a ``cluster/gpu.yaml`` cluster the same command runs the search on the cluster: there
``~/ray_bootstrap_config.yaml`` exists (``ray up`` puts it there), so the search joins the cluster
(``--address auto``) and scales out to the GPU workers it describes, and the environment that
gpu.yaml sets puts experiments on the shared file system (``UCLSER_RUNS``) and, when set, the study
in a database (``UCLSER_OPTUNA_URL``). Everything is checked (space, data, the experiment's lock and
resume, the feature store) before any GPU node is asked for; when the trials want GPUs and the
cluster has none yet, the search brings one up first and checks that torch there sees CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

from uclser_tune.config import ConfigError, parse_overrides
from uclser_tune.data.fsd import DatasetError
from uclser_tune.search.lock import ExperimentLock, LockError
from uclser_tune.search.results import META_FILE, ExperimentError, read_meta
from uclser_tune.search.spaces import ENUMERATED, SearchSpace, SpaceError, load_space
from uclser_tune.search.state import StateError
from uclser_tune.search.study import check_owner, claim, experiment_id
from uclser_tune.search.surrogate import Truth, TruthError, load_truth
from uclser_tune.train import check_data
from uclser_tune.versions import versions

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
GPU_NODE_WAIT_S = 1200  # a cloud GPU node boots and installs in 5-10 minutes
SNAPSHOT_PERIOD = "auto"  # Ray's experiment snapshots: max(10 s, 19 x the last one's time) apart
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
    p.add_argument("--storage-path", default=os.environ.get("UCLSER_RUNS", "runs"),
                   help="where experiment dirs live (default: $UCLSER_RUNS, which cluster/gpu.yaml sets to the "
                        "shared file system, else runs/)")
    p.add_argument("--num-samples", type=int, help="number of trials (default: the space's trials.num_samples)")
    p.add_argument("--max-epochs", type=int, help="epoch budget per trial = ASHA's max_t (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractional allowed (default: the space's)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the space's)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--address", default=default_address(),
                   help="Ray cluster to join ('auto' for the cluster this node belongs to; default: $RAY_ADDRESS, "
                        f"else 'auto' on a cluster's head, where {BOOTSTRAP_CONFIG} exists, else a local Ray)")
    p.add_argument("--node-ip-address", help="IP of this node for a local Ray (tests use 127.0.0.2)")
    p.add_argument("--storage-url", default=os.environ.get("UCLSER_OPTUNA_URL") or None,
                   help="Optuna RDB URL (default: $UCLSER_OPTUNA_URL, else a journal file in the experiment dir); "
                        "e.g. postgresql://user@host/db, password from ~/.pgpass")
    p.add_argument("--grace-period", type=int, help="ASHA's grace period in epochs (default: the space's)")
    p.add_argument("--reduction-factor", type=float, help="ASHA's reduction factor, > 1 (default: the space's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a run-config key for every trial (wins over the space), e.g. to size a GPU space "
                        "for a CPU: --set model.width=0.25 --set data.synth_size=small")
    p.add_argument("--smoke", action="store_true", help="tiny data, tiny models, few batches: a quick end-to-end check")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (trial seeds come from the space)")
    p.add_argument("--cluster-config", type=Path,
                   help="with --address: the cluster launcher's YAML whose GPU workers the autoscaler may start "
                        f"(default: {BOOTSTRAP_CONFIG}, where `ray up` puts it on the head); enough trials are kept "
                        "pending to ask for all of them at once")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's full console output (status blocks, trial logs) instead of the compact trial table")
    p.add_argument("--surrogate", metavar="TRUTH.yaml",
                   help="score each trial from its run config with the effects planted in TRUTH.yaml instead of "
                        "training (no data; schema in search_spaces/README.md): checks the analysis on a known truth")
    return p


def default_address() -> str | None:
    """Where the search runs when ``--address`` is not given: Ray's own ``RAY_ADDRESS``, else the cluster
    of a head node (``ray up`` leaves its bootstrap config there), else a local Ray."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return "auto" if BOOTSTRAP_CONFIG.expanduser().exists() else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space = with_asha(load_space(args.space), args.grace_period, args.reduction_factor)
        check_args(args, space)
        cli_overrides = parse_overrides(args.overrides)
        truth = load_truth(args.surrogate) if args.surrogate else None
    except (SpaceError, ConfigError, TruthError) as err:
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
    num_samples = args.num_samples or (space.grid_size() if space.sampler in ENUMERATED else space.trials["num_samples"])
    if args.smoke and not args.num_samples:
        num_samples = min(num_samples, 6)
    meta = {"space": str(space.path), "space_digest": space.digest, "overrides": overrides,
            "storage": args.storage_url or "journal:optuna.journal", "study_name": exp_dir.name,
            "sampler_seed": args.seed, "num_samples": num_samples, "asha": space.asha,
            "startup_design": len(space.startup_design(num_samples, args.seed)),
            "surrogate": truth and truth.digest, "surrogate_file": truth and str(truth.path)}
    try:
        cluster_config = read_cluster_config(args)
        if truth is None:
            check_data(base_cfg.data)
        # the lock first: nothing of the experiment is read or written while another driver runs it
        with ExperimentLock(exp_dir) as lock:
            code = 2
            try:
                old = check_resume(exp_dir, meta)
                meta["experiment_id"] = experiment_id(old)
                check_owner(exp_dir, meta, resuming=old is not None)
                code = run(args, space, exp_dir, meta, base_cfg, truth, cluster_config, resuming=old is not None)
            finally:
                if code == 2:  # refused: a dir this driver created goes again
                    lock.discard()
            return code
    except (LockError, DatasetError, SpaceError, StateError, ExperimentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def check_resume(exp_dir: Path, meta: dict) -> dict | None:
    """A resumed experiment must be re-run with what it was started with: Ray's restored experiment keeps
    its trial count, the restored searcher its seeded sampler and its study storage. Returns the
    experiment's search.json, or None for a new experiment."""
    if not (exp_dir / META_FILE).exists():
        return None
    old = read_meta(exp_dir)
    if old["space_digest"] != meta["space_digest"]:
        raise StateError(f"{exp_dir} was started with another space file ({old['space']}, or it changed since); "
                         f"use another --name to start a new experiment")
    keys = sorted(k for k in {*old["overrides"], *meta["overrides"]} if old["overrides"].get(k) != meta["overrides"].get(k))
    if keys:
        was, now = ({k: o.get(k, "unset") for k in keys} for o in (old["overrides"], meta["overrides"]))
        raise StateError(f"{exp_dir} was started with other options (--set/--data/--max-epochs/--smoke): {was}, "
                         f"now {now}; re-run with the original ones, or use another --name")
    changed = {k: (old[k], meta[k]) for k in ("num_samples", "sampler_seed", "asha", "surrogate", "storage")
               if k in old and old[k] != meta[k]}
    if changed:
        raise StateError(f"{exp_dir} was started with " + ", ".join(f"{k} {was} (now {now})" for k, (was, now)
                                                                   in changed.items())
                         + "; a resumed search keeps them: re-run with the original values (for storage: "
                           "--storage-url, or UCLSER_OPTUNA_URL on a cluster), or use another --name")
    return old


def read_cluster_config(args: argparse.Namespace) -> dict | None:
    """The cluster launcher's config (``--cluster-config``, else the head's bootstrap file if there is one)."""
    import yaml

    path = args.cluster_config or BOOTSTRAP_CONFIG
    if not args.address or not (args.cluster_config or path.expanduser().exists()):
        return None
    try:
        config = yaml.safe_load(path.expanduser().read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpaceError(f"--cluster-config {path}: cannot read it as YAML ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types"), dict):
        raise SpaceError(f"--cluster-config {path}: available_node_types: missing; expected a Ray cluster-launcher "
                         f"config (cluster/gpu.yaml)")
    return config


def scale_out_trials(cluster_config: dict | None, cpus: float, gpus: float, have: dict[str, float]) -> int:
    """Trials the cluster can run at once: with a launcher config, its nodes at their ``max_workers``
    (within the file's top-level ``max_workers``, the biggest nodes first) times the trials per node
    (its GPUs / GPUs per trial, or CPUs / CPUs per trial); without one, the trials that fit the
    cluster now. Ray 2.60 keeps one trial pending for a custom searcher unless this is the concurrency
    limit, and the autoscaler only starts nodes for pending trials: GPU nodes would come up one by one."""
    def per_node(resources: dict[str, float]) -> int:
        fits = [resources.get("CPU", 0) // cpus if cpus else math.inf,
                resources.get("GPU", 0) // gpus if gpus else math.inf]
        return int(min(fits)) if min(fits) < math.inf else 1

    if cluster_config is None:
        return max(1, per_node(have))
    types = cluster_config["available_node_types"]
    head = cluster_config.get("head_node_type")
    nodes = sorted(((per_node(t.get("resources", {})), t.get("max_workers", 0)) for n, t in types.items()
                    if n != head), reverse=True)
    total = per_node(types[head].get("resources", {})) if head in types else 0
    room = cluster_config.get("max_workers", sum(n for _, n in nodes))
    for slots, n in nodes:
        total += slots * min(n, room)
        room -= min(n, room)
    return max(1, total)


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


def console(space: SearchSpace, total: int, verbose: bool):
    """The compact console (``search.console``) showing the parameters the space searches; None with
    ``--verbose``, which keeps Ray's own status output."""
    if verbose:
        return None
    from uclser_tune.search.console import Console

    keys = [(k, d.when) for k, d in space.params.items()]
    keys += [(k, None) for k in sorted({k for v in space.variants.values() for k in v})]
    if space.candidates:
        keys.append(("views.ops", None))
    return Console(keys, total)


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
    if space.sampler == "design" and args.num_samples and not args.smoke and args.num_samples != space.grid_size():
        raise SpaceError(f"--num-samples: got {args.num_samples}; a 'sampler: design' space runs its whole design, "
                         f"{space.grid_size()} trials (points x replicates): a part of it would not be balanced")
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


def run(args: argparse.Namespace, space: SearchSpace, exp_dir: Path, meta: dict, base_cfg, truth: Truth | None,
        cluster_config: dict | None, resuming: bool) -> int:
    """The search, with this driver holding the experiment's lock. Everything that can refuse to run
    (an unusable snapshot, the data, trial resources, a GPU node that cannot run CUDA) comes before
    search.json is written, and the GPU node is asked for only after everything else was checked."""
    import ray
    from ray import tune

    from uclser_tune.data.store import open_store
    from uclser_tune.search import results
    from uclser_tune.search.remote import GpuNodeError, wait_for_gpu_node
    from uclser_tune.search.searcher import StudySearch
    from uclser_tune.search.state import (
        StateError,
        mark_lost_trials,
        prepare_resume,
        restored_trials,
        storage_fs,
    )
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
    resume = tune.Tuner.can_restore(str(exp_dir), storage_filesystem=storage_fs())
    try:
        if resume:
            for note in prepare_resume(exp_dir):
                print(f"warning: {note}", file=sys.stderr)
        elif (exp_dir / results.META_FILE).exists():
            n = len(results.open_study(exp_dir, meta).trials)
            if n:
                raise StateError(f"{exp_dir}: the Optuna study has {n} trials but Ray saved no experiment state "
                                 f"to resume them (killed at start-up?); use another --name to start a new experiment")
    except StateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyError:  # no study of that name yet: nothing to resume
        pass

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
        reporter = console(space, meta["num_samples"], args.verbose)
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
    tmp = exp_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps({**meta, "versions": versions()}, indent=1))
    tmp.replace(exp_dir / META_FILE)  # atomic: a kill never leaves a truncated search.json


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


if __name__ == "__main__":
    sys.exit(main())
