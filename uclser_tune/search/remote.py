"""Running independent jobs as Ray tasks (retraining on a cluster): Ray stays in the search layer."""

from __future__ import annotations

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
