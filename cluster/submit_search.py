"""The search on the head node of a ``cluster/gpu.yaml`` cluster (``ray submit`` runs a Python file):

    ray submit --tmux cluster/gpu.yaml cluster/submit_search.py -- --space augs.yaml --data /mnt/efs/uclser/data/FSDnoisy18k

``python -m uclser_tune.search`` with the cluster's defaults in front of your arguments (yours win):
``--address auto``, ``--storage-path $UCLSER_RUNS`` (the shared file system) and, when
``UCLSER_OPTUNA_URL`` is set on the head, ``--storage-url $UCLSER_OPTUNA_URL``. Submitting the same
arguments again resumes the experiment.

The GPU workers scale from zero. The search keeps its per-trial GPU request on a cluster (the
autoscaler starts GPU nodes for the waiting trials), but a missing GPU quota or a wrong AMI would
then only show as trials that never start; so when the trials want GPUs, this first asks the
autoscaler for one GPU node, waits for it (up to 20 minutes, with a clear error after that) and
withdraws the request when the search ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence


def search_argv(args: Sequence[str], env: Mapping[str, str] = os.environ) -> list[str]:
    defaults = ["--address", "auto", "--storage-path", env.get("UCLSER_RUNS", "runs")]
    if env.get("UCLSER_OPTUNA_URL"):
        defaults += ["--storage-url", env["UCLSER_OPTUNA_URL"]]
    return [*defaults, *args]


def gpus_per_trial(argv: Sequence[str]) -> float:
    from uclser_tune.search.__main__ import build_parser
    from uclser_tune.search.spaces import SpaceError, load_space

    args = build_parser().parse_args(argv)
    if args.gpus_per_trial is not None:
        return args.gpus_per_trial
    try:
        return load_space(args.space).resources.get("gpu", 0)
    except SpaceError:
        return 0  # the search itself reports it


def request_gpu_node(timeout_s: float = 1200) -> None:
    """Ask the autoscaler to keep a GPU node up and wait until the cluster has one."""
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address="auto")
    try:
        request_resources(bundles=[{"GPU": 1}])
        deadline = time.monotonic() + timeout_s
        while not ray.cluster_resources().get("GPU"):
            if time.monotonic() > deadline:
                sys.exit(f"no GPU node after {timeout_s:.0f} s: see `ray exec cluster/gpu.yaml 'ray status'`, "
                         "/tmp/ray/session_latest/logs/monitor.* on the head and your EC2 GPU quota")
            print("waiting for the autoscaler to start a GPU worker ...", file=sys.stderr)
            time.sleep(5)
    finally:
        ray.shutdown()


def release_gpu_node() -> None:
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address="auto", ignore_reinit_error=True)
    request_resources(bundles=[])


if __name__ == "__main__":
    from uclser_tune.search.__main__ import main

    argv = search_argv(sys.argv[1:])
    gpus = gpus_per_trial(argv) > 0
    if gpus:
        request_gpu_node()
    try:
        code = main(argv)
    finally:
        if gpus:
            release_gpu_node()
    sys.exit(code)
