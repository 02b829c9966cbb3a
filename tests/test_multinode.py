"""The search on a multi-node Ray cluster on this machine (cluster/local_cluster.py): a head with no
CPUs and worker nodes of 1 CPU each on 127.0.0.2+, in a private network namespace where one can be
made. Trials spread over the workers; the workers cannot see the data (an empty read-only mount over
the cache that holds the data set and its feature store), so the store reaches them through Ray's
object store only; a worker node killed mid-trial costs a retry from the trial's last checkpoint on
a surviving node, and the search still accounts for every trial."""

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
import psutil
import pytest
import yaml
from children import Child, poll_until, run

from uclser_tune.search.results import META_FILE, open_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from local_cluster import HEAD_IP, LocalCluster, free_port, namespaces_work

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(cache_dir, tiny_store):
    """Head + 2 workers; the workers cannot read the cache dir (data set and feature store)."""
    isolate = namespaces_work()
    started = time.monotonic()
    c = start_cluster(isolate, [str(cache_dir)] if isolate else [])
    try:
        c.startup_s = time.monotonic() - started
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)


def start_cluster(isolate: bool, masked: list[str]) -> LocalCluster:
    """In a private network namespace the ports are ours. On the shared host network a port found free
    can be taken before Ray binds it, so a cluster whose nodes did not come up is stopped and started
    again on another block, rather than trusting a bind-then-release check."""
    for attempt in range(3):
        c = LocalCluster(workers=2, port=6390 if isolate else free_port(), isolate=isolate, masked=masked)
        try:
            return c.start()
        except RuntimeError:
            c.stop()
            shutil.rmtree(c.root, ignore_errors=True)
            if isolate or attempt == 2:
                raise
    raise AssertionError("unreachable")


def run_search(c: LocalCluster, runs: Path, name: str, space, address: str, on_poll=None) -> str:
    """The search CLI as a user runs it against the cluster (next to the nodes); ``on_poll`` is called
    every 0.1 s while it runs. Returns its output; kills its process group if the test fails. No time
    budget of its own: it may run for what the test has left (children.left)."""
    cmd = [*c.enter, sys.executable, "-m", "uclser_tune.search", "--space", str(space), "--name", name,
           "--address", address, "--node-ip-address", HEAD_IP, "--storage-path", str(runs)]
    log = runs / f"{name}.log"
    runs.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=c.driver_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    search = Child(proc, f"search {name}", log=log)
    try:
        def done() -> bool:
            if on_poll:
                on_poll()
            return proc.poll() is not None

        poll_until(done, None, f"the end of search {name}", interval=0.1)
        assert proc.returncode == 0, f"search failed (rc {proc.returncode}):\n{log.read_text()[-4000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            search.wait(60, f"the SIGKILLed search {name}'s exit")
    return log.read_text()


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def live_trial_dirs(c: LocalCluster, name: str) -> list[Path]:
    """The driver's own trial dirs of experiment ``name``, in the cluster's Ray session: the driver writes
    each result there as it arrives; the experiment dir gets a copy only at Ray's syncs."""
    return sorted(Path(c.root).glob(f"*/session_*/artifacts/*/{name}/driver_artifacts/trial_*"))


def check_study(exp: Path, table: pd.DataFrame, n: int) -> None:
    """Every trial accounted for: n rows, one per Optuna trial, none left RUNNING or FAIL."""
    assert len(table) == n and table.optuna_number.is_unique
    states = {t.number: t.state.name for t in open_study(exp, json.loads((exp / META_FILE).read_text())).trials}
    assert sorted(states) == sorted(table.optuna_number) and set(states.values()) <= {"COMPLETE", "PRUNED"}, states
    assert (table.status == table.optuna_number.map(states)).all()


@pytest.fixture(scope="module")
def smoke(cluster, tmp_path_factory):
    runs = tmp_path_factory.mktemp("mn_runs")
    started = time.monotonic()
    out = run_search(cluster, runs, "smoke", "smoke.yaml", cluster.address)
    return {"exp": runs / "smoke", "out": out, "wall_s": time.monotonic() - started,
            "table": pd.read_parquet(runs / "smoke" / "trials.parquet")}


def test_trials_ran_on_more_than_one_node(cluster, smoke):
    table, exp = smoke["table"], smoke["exp"]
    check_study(exp, table, 6)
    workers = {n.ip for n in cluster.nodes if n.name != "head"}
    per_report = {r["node_ip"] for d in table.trial_dir for r in reports(exp / d)}
    assert per_report <= workers, per_report  # never the 0-CPU head
    assert len(set(table.node_ip)) >= 2, table.node_ip.value_counts()
    print(f"\nmulti-node smoke: {len(table)} trials, per node {table.node_ip.value_counts().to_dict()}, "
          f"search {smoke['wall_s']:.0f} s, cluster start {cluster.startup_s:.1f} s")


@pytest.mark.skipif(not namespaces_work(), reason="needs root (unshare) to hide the data from the workers")
def test_workers_never_read_the_data_path(cluster, smoke, cache_dir):
    """The driver has the data set and its store under cache_dir; every worker node sees an empty
    read-only folder there (checked through its processes' own view, /proc/PID/root), and yet every
    trial trained and reported: the store reached them through the object store, not a path."""
    assert any(cache_dir.iterdir())
    for node in cluster.nodes:
        if node.name == "head":
            continue
        view = Path(f"/proc/{node.pid}/root{cache_dir}")
        assert view.is_dir() and not any(view.iterdir()), f"{node.name} sees the driver's data"
    table = smoke["table"]
    assert (table.error == "").all(), table.error
    assert (table.epochs_run >= 1).all() and table.node_ip.isin([n.ip for n in cluster.nodes]).all()


def test_worker_killed_mid_trial_is_retried_from_its_checkpoint(cluster, tmp_path):
    """Kill the worker node that runs a trial after its first checkpoint: Ray retries the trial on a
    surviving node from that checkpoint (FailureConfig), and the search completes every trial."""
    cluster.add_worker()  # so that this test leaves two live workers behind, whatever ran before
    cluster.wait_for_nodes(len(cluster.nodes))
    space = yaml.safe_load(Path("search_spaces/smoke.yaml").read_text())
    space.update(asha=None, epochs=6, trials={"num_samples": 3, "max_concurrent": 2})  # no pruning: all complete
    space["base"]["train"]["max_batches_per_epoch"] = 6  # epochs of ~1 s: time to kill mid-trial
    path = tmp_path / "fault.yaml"
    path.write_text(yaml.safe_dump(space))
    exp = tmp_path / "runs" / "fault"
    killed: dict = {}

    def kill_a_busy_node():
        """A trial past its first checkpoint: its node is frozen (SIGSTOP) first, so the check that the
        trial is still mid-run is made on a node that cannot move on, then the node is killed."""
        if killed:
            return
        for trial_dir in live_trial_dirs(cluster, "fault"):
            last = (reports(trial_dir) or [{}])[-1]
            if not 1 <= last.get("epoch", 0) < 6:
                continue
            node = next(n for n in cluster.nodes if n.ip == last["node_ip"])
            frozen = [node.pid, *(p.pid for p in psutil.Process(node.pid).children(recursive=True))]
            signal_all(frozen, signal.SIGSTOP)
            last = reports(trial_dir)[-1]
            if last["epoch"] < 6 and last["node_ip"] == node.ip:  # still mid-run there
                cluster.kill(node)
                killed.update(trial=trial_dir.name, ip=node.ip, epoch=last["epoch"], at=time.time())
                return
            signal_all(frozen, signal.SIGCONT)

    started = time.monotonic()
    run_search(cluster, tmp_path / "runs", "fault", path, "auto", on_poll=kill_a_busy_node)  # as on a cloud
    wall = time.monotonic() - started
    assert killed, "no trial was caught mid-run"
    table = pd.read_parquet(exp / "trials.parquet")
    check_study(exp, table, 3)
    assert (table.status == "COMPLETE").all() and (table.epochs_run == 6).all()

    history = reports(exp / killed["trial"])
    epochs = [r["epoch"] for r in history]
    after = [r for r in history if r["node_ip"] != killed["ip"]]
    assert after, history
    resumed = after[0]["resumed_from"]
    assert resumed >= 1 and after[0]["epoch"] == resumed + 1 > 1, history  # from the checkpoint, not epoch 1
    assert epochs.count(1) == 1 and epochs[-1] == 6, epochs
    assert all(r["resumed_from"] == resumed for r in after)
    assert table.set_index("trial_dir").loc[killed["trial"], "retried_from_epoch"] == resumed
    assert killed["ip"] not in {n.ip for n in cluster.nodes}
    retry_s = after[0]["timestamp"] - killed["at"]
    print(f"\nnode failure: killed {killed['ip']} at epoch {killed['epoch']} of {killed['trial']}; retried on "
          f"{after[0]['node_ip']} from epoch {resumed} ({retry_s:.0f} s later); per node "
          f"{pd.Series([r['node_ip'] for d in table.trial_dir for r in reports(exp / d)]).value_counts().to_dict()} "
          f"epoch reports; search {wall:.0f} s")


def test_retrain_runs_as_ray_tasks_on_the_workers(cluster, smoke):
    """`retrain --address` on the smoke experiment: every (config, seed) job is a Ray task on a worker
    node (the head has no CPUs and the workers cannot read the data), and the table is complete."""
    exp = smoke["exp"]
    cmd = [*cluster.enter, sys.executable, "-m", "uclser_tune.retrain", str(exp), "--seeds", "1", "--epochs", "1",
           "--downstream-epochs", "1", "--set", "downstream.batch_size=32", "--set", "train.num_threads=1",
           "--address", cluster.address, "--node-ip-address", HEAD_IP]
    started = time.monotonic()
    proc = run(cmd, None, "retrain on the cluster", env=cluster.driver_env, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = pd.read_csv(exp / "retrain" / "runs.csv")
    workers = {n.ip for n in cluster.nodes if n.name != "head"}
    assert len(runs) == 3 and set(runs["node"]) <= workers, runs[["name", "node"]]
    assert runs.loc[runs["init"] == "pretrained", "linear"].between(0, 1).all()
    print(f"\nretrain on the cluster: {len(runs)} jobs on {runs['node'].value_counts().to_dict()}, "
          f"{time.monotonic() - started:.0f} s")
