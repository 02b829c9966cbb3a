"""Ray on a cluster outside the search itself: independent jobs as Ray tasks (retraining), and the wait
for the first GPU node of an autoscaling cluster. Ray stays in the search layer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any


def _on_node(fn: Callable[[Any, Any], Any], item: Any, shared: Any) -> tuple[Any, str]:
    import ray

    return fn(item, shared), ray.util.get_node_ip_address()


def map_on_ray(fn: Callable[[Any, Any], Any], items: list[Any], shared: Any, *, address: str,
               cpus: float = 1, gpus: float = 0, node_ip: str | None = None) -> Iterator[tuple[Any, Any, str]]:
    """Run ``fn(item, shared)`` for every item as a Ray task; yield ``(item, result, node IP)`` as each
    finishes. ``shared`` (e.g. the feature store) goes into the object store once; every node maps
    one copy. A task that raises re-raises here, naming its item.
    """
    import ray

    init: dict[str, Any] = {"address": address}
    if node_ip:
        init["_node_ip_address"] = node_ip
    ray.init(include_dashboard=False, configure_logging=False, ignore_reinit_error=True, **init)
    try:
        ref = ray.put(shared)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=2)(_on_node)
        pending = {task.remote(fn, item, ref): item for item in items}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(done[0])
            try:
                result, ip = ray.get(done[0])
            except ray.exceptions.RayTaskError as err:
                raise RuntimeError(f"job {item} failed on the cluster: {err}") from None
            yield item, result, ip
    finally:
        ray.shutdown()


class GpuProbe:
    """Holds a GPU of a worker node until killed: its creation is the demand for a GPU node."""

    def node(self, device: str = "auto") -> str:
        """The node's IP, once torch there can use the GPU Ray gave this actor (else ``NoCudaError``);
        ``device`` is the trials' ``train.device``, as ``check_cuda`` reads it."""
        import ray

        from uclser_tune.search.trainable import check_cuda

        ip = ray.util.get_node_ip_address()
        check_cuda(ray.get_gpu_ids(), ip, device)
        return ip


class GpuNodeError(RuntimeError):
    """No usable GPU node: none came up in time, or the one that did cannot run CUDA."""


def wait_for_gpu_node(timeout_s: float, device: str = "auto") -> str:
    """Bring up one GPU node of the cluster this driver is connected to, check that torch there sees
    CUDA (unless the trials' ``device`` is 'cpu'), and return its IP; ``GpuNodeError`` with what to check if that fails within ``timeout_s``.

    The demand is a pending GPU actor owned by this driver, not ``ray.autoscaler.sdk.request_resources``:
    the autoscaler sees it like a pending trial, it is killed here as soon as a node has joined, and Ray
    removes it with its owner if the process dies (SIGKILL, a tmux hang-up). A ``request_resources``
    call stays in the autoscaler's state until withdrawn, so a killed driver would leave a GPU node
    running with no end."""
    import ray

    probe = ray.remote(num_cpus=0, num_gpus=1)(GpuProbe).remote()
    try:
        print("waiting for the autoscaler to start a GPU worker ...", file=sys.stderr)
        ready, _ = ray.wait([probe.node.remote(device)], timeout=timeout_s)
        if not ready:
            raise GpuNodeError(f"no GPU node after {timeout_s:.0f} s: see `ray exec cluster/gpu.yaml 'ray status'`, "
                               "/tmp/ray/session_latest/logs/monitor.* on the head and your EC2 GPU quota")
        try:
            return ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            raise GpuNodeError(str(err.cause)) from None
    finally:
        ray.kill(probe)  # the demand ends here, not when the driver disconnects
