"""Autoscaling, tested here with the test as the autoscaler.

Ray's fake multi-node provider cannot be kept on loopback: it starts its nodes with the IP address
Ray derives from the outside interface. So the cluster is ``cluster/local_cluster.py`` (head without
CPUs or GPUs on 127.0.0.2) and the test does the autoscaler's job from the same information the real
one reads: the GCS's cluster status (``ray.autoscaler.v2.sdk.get_cluster_status``: pending task,
actor and placement-group demand, ``request_resources`` constraints, idle nodes). When GPUs are
demanded it adds worker nodes with a GPU resource (``ray start --num-gpus 1``, no GPU needed).

Checked: ``wait_for_gpu_node`` (what the search runs first on a cluster without a GPU node) demands one GPU node, withdraws the demand once the
node has joined, and a SIGKILLed submit leaves no standing request; a search with ``--address`` and
a launcher config keeps max_workers × trials-per-node trials pending (so the demand asks for every
node at once), runs on the GPU workers that come up, and leaves them idle with no demand."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from children import Child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))
from local_cluster import HEAD_IP, LocalCluster, free_port, namespaces_work

from uclser_tune.search.cli import SMOKE
from uclser_tune.search.resources import scale_out_trials

pytestmark = pytest.mark.slow

# What the autoscaler reads: GPUs demanded (pending tasks/actors, placement groups), standing
# request_resources constraints (v2 state and v1's KV key) and the idle nodes. One process next to the
# nodes prints it as a JSON line for every line it reads, so that polling does not start a Python that
# imports Ray each time (which would take CPU from the cluster it waits on).
STATUS = """
import json, os, sys
from ray._raylet import GcsClient
from ray.autoscaler.v2.sdk import get_cluster_status
gcs = GcsClient(address=os.environ["RAY_ADDRESS"])
print("ready", flush=True)
for _ in sys.stdin:
    s = get_cluster_status(os.environ["RAY_ADDRESS"])
    d = s.resource_demands
    demands = list(d.ray_task_actor_demand) + list(d.placement_group_demand) + list(d.cluster_constraint_demand)
    # request_resources under autoscaler v1 (the default): a key in the GCS's KV store that the monitor reads
    kv = gcs.internal_kv_get(b"autoscaler_resource_request", None)
    print("status " + json.dumps({
        "gpu_demand": sum(b.bundle.get("GPU", 0) * b.count for x in demands for b in x.bundles_by_count),
        "constraints": len(d.cluster_constraint_demand) + len(json.loads(kv) if kv else []),
        "idle": sorted(n.ip_address for n in s.idle_nodes),
        "active": sorted(n.ip_address for n in s.active_nodes)}), flush=True)
"""
POLL_S = 0.5


class StatusReader:
    """The STATUS process of a cluster: ``read()`` asks it for one status."""

    def __init__(self, c: LocalCluster, log: Path):
        with open(log, "w") as err:
            proc = subprocess.Popen([*c.enter, sys.executable, "-c", STATUS], env=c.driver_env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        self.child = Child(proc, "the cluster-status reader", log=log)
        while self.child.readline(120, "the status reader to connect").strip() != "ready":
            pass

    def read(self) -> dict:
        self.child.proc.stdin.write("\n")
        self.child.proc.stdin.flush()
        while not (line := self.child.readline(60, "a cluster status")).startswith("status "):
            pass
        return json.loads(line.removeprefix("status "))

    def close(self) -> None:
        if self.child.proc.poll() is None:
            os.killpg(self.child.proc.pid, signal.SIGKILL)
            self.child.wait(60, "the status reader's exit")


def status(c: LocalCluster) -> dict:
    return c.status_reader.read()


def wait_for(c: LocalCluster, ok, what: str, timeout: float = 90) -> dict:
    """The first status that satisfies ``ok``, polled every POLL_S; fails with the last one after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ok(s := status(c)):
        assert time.monotonic() < deadline, f"not met within {timeout:g} s: {what}; last status {s}"
        time.sleep(POLL_S)
    return s


def submit_probe(c: LocalCluster) -> Child:
    code = ("import ray; ray.init(address='auto', include_dashboard=False)\n"
            "from uclser_tune.search.remote import GpuNodeError, wait_for_gpu_node\n"
            "try:\n    print('joined', wait_for_gpu_node(300))\nexcept GpuNodeError as err:\n    print('refused:', err)\n")
    return Child(subprocess.Popen([*c.enter, sys.executable, "-c", code], cwd=ROOT, env=c.driver_env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True),
                 "the submit probe")


def kill(child: Child) -> None:
    if child.proc.poll() is None:
        os.killpg(child.proc.pid, signal.SIGKILL)
    child.wait(60, f"{child.name}'s exit after SIGKILL")


@pytest.fixture(scope="module")
def cluster(tiny_store):
    isolate = namespaces_work()
    c = LocalCluster(workers=0, port=6590 if isolate else free_port(), isolate=isolate)
    with c:
        c.status_reader = StatusReader(c, Path(c.root) / "status.log")
        try:
            yield c
        finally:
            c.status_reader.close()
    shutil.rmtree(c.root, ignore_errors=True)


def test_gpu_yaml_keeps_every_gpu_node_it_may_start_pending():
    config = yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text())
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and config["max_workers"] == workers["max_workers"] == 8
    assert scale_out_trials(config, cpus=2, gpus=0.5, have={}) == 8 * 2  # two trials per GPU node
    assert scale_out_trials(config, cpus=2, gpus=1, have={}) == 8
    assert scale_out_trials(config, cpus=8, gpus=0.25, have={}) == 8  # CPUs bound: 8 per node, 1 trial
    capped = {**config, "max_workers": 3}
    assert scale_out_trials(capped, cpus=1, gpus=1, have={}) == 3
    assert scale_out_trials(None, cpus=1, gpus=0.5, have={"CPU": 4, "GPU": 1}) == 2  # no launcher config


def test_a_killed_submit_leaves_no_gpu_request(cluster):
    probe = submit_probe(cluster)
    try:
        wait_for(cluster, lambda s: s["gpu_demand"] == 1, "the submit script's GPU demand")
    finally:
        kill(probe)
    s = wait_for(cluster, lambda s: s["gpu_demand"] == 0, "the demand to go with the killed driver")
    assert s["constraints"] == 0


def test_the_gpu_request_is_withdrawn_once_a_gpu_node_joined(cluster):
    probe = submit_probe(cluster)
    try:
        wait_for(cluster, lambda s: s["gpu_demand"] == 1, "the submit script's GPU demand")
        node = cluster.add_worker("--num-gpus", "1")  # what the autoscaler does for that demand
        out = probe.read_rest(120, "the probe's 'joined' after the GPU node joined")
        probe.wait(60, "the probe's exit")
    finally:
        kill(probe)
    # the node came up: joined where torch sees CUDA, else refused naming the node (the test's GPUs are not real)
    assert probe.proc.returncode == 0 and (f"joined {node.ip}" in out or f"refused: node {node.ip}:" in out), out
    s = wait_for(cluster, lambda s: s["gpu_demand"] == 0 and node.ip in s["idle"], "an idle GPU node, no demand")
    assert s["constraints"] == 0


def test_a_search_scales_out_on_gpu_workers_and_leaves_them_idle(cluster, tmp_path):
    """The launcher config allows 2 GPU nodes (1 CPU, 1 GPU each): the search keeps 2 trials going, so a
    GPU is demanded for each trial beyond the GPU nodes there; the test starts them, the trials run there.
    With ``train.device: cpu`` the fake GPUs pass the search's CUDA checks (they are only scheduling slots)."""
    launcher = {"max_workers": 2, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 2}}}
    (tmp_path / "launcher.yaml").write_text(yaml.safe_dump(launcher))
    runs = tmp_path / "runs"
    cmd = [*cluster.enter, sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--name", "gpu",
           "--address", "auto", "--node-ip-address", HEAD_IP, "--storage-path", str(runs),
           "--cluster-config", str(tmp_path / "launcher.yaml"), "--gpus-per-trial", "1", "--cpus-per-trial", "1",
           "--num-samples", "3", "--max-epochs", "1", *[f"--set={k}={v}" for k, v in SMOKE.items()],
           "--set=train.device=cpu"]  # the test's GPUs are not real: each one is a scheduling slot
    busy = {ip for ip in status(cluster)["idle"] if ip != HEAD_IP}  # GPU nodes of earlier tests serve too
    search = Child(subprocess.Popen(cmd, cwd=ROOT, env=cluster.driver_env, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True), "the search")
    try:
        added = []
        if not busy:  # no GPU node yet: the search first brings one up with its probe
            wait_for(cluster, lambda s: s["gpu_demand"] >= 1, "the search's GPU-node probe", timeout=240)
            added.append(cluster.add_worker("--num-gpus", "1"))
        more = 2 - len(busy) - len(added)
        wait_for(cluster, lambda s: s["gpu_demand"] >= more, f"{more} GPU trials pending", timeout=240)
        added += [cluster.add_worker("--num-gpus", "1") for _ in range(more)]
        out = search.read_rest(None, "the end of the search on the GPU workers")
        search.wait(60, "the search's exit")
    finally:
        kill(search)
    assert search.proc.returncode == 0, out[-4000:]
    table = pd.read_parquet(runs / "gpu" / "trials.parquet")
    assert len(table) == 3 and set(table.status) <= {"COMPLETE", "PRUNED"}
    gpu_nodes = {n.ip for n in added} | busy
    assert set(table.node_ip) <= gpu_nodes  # the head has no CPU: every trial ran on a GPU worker
    wait_for(cluster, lambda s: s["gpu_demand"] == 0 and gpu_nodes <= set(s["idle"]), "idle GPU nodes, no demand")

