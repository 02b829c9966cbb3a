"""The Ray Tune trainables: Ray plumbing around ``uclser_tune.training.pretrain`` (or, for ``--surrogate``,
around ``surrogate.score``) and nothing else."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import ray
import torch
from ray import tune

from uclser_tune.config import config_from_dict
from uclser_tune.data.store import FeatureStore
from uclser_tune.search.surrogate import Truth, score
from uclser_tune.training import NonFiniteLossError, load_checkpoint, pretrain, save_checkpoint
from uclser_tune.training.runtime import cuda_report

SURROGATE_STATE = "surrogate.json"  # a surrogate trial's checkpoint: the last epoch it reported
USS_EVERY_S = 30.0  # how often a trial's reports re-read its memory (the first report always does)


class NoCudaError(RuntimeError):
    """Ray gave a trial a GPU on a node where torch cannot use one: the trial would train on the CPU at
    GPU prices (``train.device: auto`` falls back to the CPU)."""


def check_cuda(gpu_ids: list, node_ip: str, device: str = "auto") -> None:
    """Fail at once, naming the node, its NVIDIA driver and torch's build, when Ray assigned GPUs that
    torch cannot see (a wrong AMI, a driver older than torch's CUDA, a CPU build of torch). An explicit
    ``train.device: cpu`` asks for the CPU: the GPU is then only a scheduling slot and is not checked."""
    if gpu_ids and device != "cpu" and not torch.cuda.is_available():
        raise NoCudaError(f"node {node_ip}: Ray gave this trial GPU {', '.join(map(str, gpu_ids))} but torch "
                          f"sees no CUDA: {cuda_report()}")


class UssMeter:
    """This process's USS in MB (memory private to the trial; the store in the object store is shared, not
    counted), read at most every ``every_s``: psutil reads it from /proc/<pid>/smaps, which costs tens of
    milliseconds in a process holding torch and a model, more than the rest of a surrogate's report."""

    def __init__(self, every_s: float = USS_EVERY_S) -> None:
        self.every_s = every_s
        self.process = psutil.Process()
        self.at = -math.inf
        self.mb = math.nan

    def __call__(self) -> float:
        now = time.monotonic()
        if now - self.at >= self.every_s:
            self.mb, self.at = self.process.memory_full_info().uss / 1e6, now
        return self.mb


def run_trial(config: dict[str, Any], store: FeatureStore) -> None:
    """One trial: restore from ``tune.get_checkpoint()`` if Ray retries it, report kNN with a checkpoint
    every epoch. ``store`` arrives once per node through the object store (``tune.with_parameters``)."""
    cfg = config_from_dict(config["run_config"])
    check_cuda(ray.get_gpu_ids(), ray.util.get_node_ip_address(), cfg.train.device)
    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_checkpoint(d)
    host = {"node": platform.node(), "pid": os.getpid()}
    uss = UssMeter()

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(state, d)
            tune.report({**metrics, **host, "uss_mb": uss(),
                         "max_epochs": cfg.train.epochs,
                         "resumed_from": resume["epoch"] if resume else 0,
                         "reported_at": time.time()},  # Ray's 'timestamp' is whole seconds
                        checkpoint=tune.Checkpoint.from_directory(d))

    try:
        pretrain(cfg, store, report=report, resume=resume)
    except NonFiniteLossError as err:
        # a deterministic failure: end the trial with the error (the study records FAIL) instead of
        # letting Ray retry it from a checkpoint that would diverge again
        tune.report({"epoch": err.epoch, "knn_acc": float("nan"), "error": str(err), "max_epochs": cfg.train.epochs,
                     **host})


def surrogate_trial(config: dict[str, Any], truth: Truth) -> None:
    """A planted-truth trial (``--surrogate``): reports ``surrogate.score`` of its run config every epoch,
    with a checkpoint holding only the epoch, so ASHA, the study, the results table and resume see a
    trial exactly like a training one, without data or a model."""
    cfg = config_from_dict(config["run_config"])
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / SURROGATE_STATE).read_text())["epoch"]
    host = {"node": platform.node(), "pid": os.getpid()}
    for epoch in range(start + 1, cfg.train.epochs + 1):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / SURROGATE_STATE).write_text(json.dumps({"epoch": epoch}))
            tune.report({"epoch": epoch, "knn_acc": score(truth, cfg, epoch, cfg.train.epochs, cfg.seed),
                         "max_epochs": cfg.train.epochs, "resumed_from": start, "reported_at": time.time(), **host},
                        checkpoint=tune.Checkpoint.from_directory(d))
