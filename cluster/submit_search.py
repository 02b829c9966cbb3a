"""The search on the head node of a ``cluster/gpu.yaml`` cluster (``ray submit`` runs a Python file):

    ray submit --tmux cluster/gpu.yaml cluster/submit_search.py -- --space augs.yaml --data /mnt/efs/uclser/data/FSDnoisy18k

``python -m uclser_tune.search`` with the cluster's defaults in front of your arguments (yours win):
``--address auto``, ``--storage-path $UCLSER_RUNS`` (the shared file system) and, when
``UCLSER_OPTUNA_URL`` is set on the head, ``--storage-url $UCLSER_OPTUNA_URL``. Submitting the same
arguments again resumes the experiment.

The GPU workers scale from zero. The search keeps its per-trial GPU request on a cluster and keeps
enough trials pending for the autoscaler to start every GPU node it may (``--cluster-config``, read
from the head's ``~/ray_bootstrap_config.yaml``), but a missing GPU quota or a wrong AMI would then
only show as trials that never start. So when the trials want GPUs, this first asks for one GPU node
and waits for it (up to 20 minutes, with a clear error after that). The ask is a pending GPU actor
owned by this script, not ``request_resources``: the autoscaler sees it as demand like any pending
task, it is killed as soon as a GPU node has joined, and Ray removes it with its owner if this
script dies (SIGKILL, a tmux hang-up). A ``request_resources`` call instead stays in the autoscaler's
state until someone withdraws it, and would keep a GPU node running with no end.
"""

from __future__ import annotations

import os
import sys
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


if __name__ == "__main__":
    from uclser_tune.search.__main__ import main
    from uclser_tune.search.remote import wait_for_gpu_node

    argv = search_argv(sys.argv[1:])
    if gpus_per_trial(argv) > 0:
        print(f"GPU node {wait_for_gpu_node('auto', timeout_s=1200)} is up", file=sys.stderr)
    sys.exit(main(argv))
