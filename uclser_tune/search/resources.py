"""Where the search's trials run: the Ray cluster to join, the CPUs and GPUs per trial, and how many
trials to keep pending so that the autoscaler starts every GPU node a cluster-launcher config allows.

On the head of a ``cluster/gpu.yaml`` cluster ``ray up`` leaves the launcher's config in
``~/ray_bootstrap_config.yaml``: its presence makes the search join that cluster (``--address auto``),
and its node types say how many trials the cluster can run at once when scaled out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from uclser_tune.search.spaces import SearchSpace, SpaceError

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
GPU_NODE_WAIT_S = 1200  # a cloud GPU node boots and installs in 5-10 minutes


def default_address() -> str | None:
    """Where the search runs when ``--address`` is not given: Ray's own ``RAY_ADDRESS``, else the cluster
    of a head node (``ray up`` leaves its bootstrap config there), else a local Ray."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return "auto" if BOOTSTRAP_CONFIG.expanduser().exists() else None


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
