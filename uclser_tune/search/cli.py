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
import os
import sys
from pathlib import Path

from uclser_tune.config import ConfigError, load_overrides, parse_overrides
from uclser_tune.data.fsd import DatasetError
from uclser_tune.runs import check_data
from uclser_tune.search.driver import run
from uclser_tune.search.lock import ExperimentLock, LockError
from uclser_tune.search.resources import BOOTSTRAP_CONFIG, default_address, read_cluster_config
from uclser_tune.search.results import ExperimentError
from uclser_tune.search.resume import SEARCHER_STATE, check_resume
from uclser_tune.search.spaces import (
    CONFIGS_DIR,
    ENUMERATED,
    SearchSpace,
    SpaceError,
    load_space,
    resolve_path,
)
from uclser_tune.search.state import StateError
from uclser_tune.search.study import check_owner, experiment_id
from uclser_tune.search.surrogate import TruthError, load_truth

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
    p.add_argument("--config", metavar="CONFIG.yaml",
                   help="run-config values fixed for every trial (nested or dotted keys; wins over the space, --set "
                        "wins over it); a bare name is looked up in search_spaces/configs/, e.g. cpu_small.yaml: "
                        "the CPU setting of the experiments in results/")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space = with_asha(load_space(args.space), args.grace_period, args.reduction_factor)
        check_args(args, space)
        cli_overrides = {**(load_overrides(resolve_path(args.config, CONFIGS_DIR)) if args.config else {}),
                         **parse_overrides(args.overrides)}
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
            "searcher_state": SEARCHER_STATE,
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
