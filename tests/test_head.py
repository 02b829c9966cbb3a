"""The mission's command on the head of a cluster: ``python -m uclser_tune.search --space smoke.yaml``
with no cluster flags, on a loopback cluster (cluster/local_cluster.py) set up the way ``ray up
cluster/gpu.yaml`` leaves a head: ``~/ray_bootstrap_config.yaml`` in the home folder, the address of
the running Ray in Ray's ``ray_current_cluster`` file, and gpu.yaml's ``UCLSER_RUNS`` (the shared
file system). The search joins the cluster, runs its trials on the workers and writes to the shared
folder; a bad ``--data`` is refused before any GPU is asked for; a trial given a GPU on a node whose
torch has no CUDA fails at once with a line that names the node, the driver and torch's build."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from local_cluster import LocalCluster

pytestmark = pytest.mark.slow
BOOTSTRAP = {"cluster_name": "loopback", "max_workers": 2, "head_node_type": "head",
             "available_node_types": {"head": {"resources": {"CPU": 0}},
                                      "cpu_worker": {"resources": {"CPU": 1}, "max_workers": 1},
                                      "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 1}}}


@pytest.fixture(scope="module")
def head(tmp_path_factory, cache_dir, tiny_store):
    """A 0-CPU head and one 1-CPU worker; the environment of a login shell on the head."""
    root = tmp_path_factory.mktemp("head")
    home, ray_tmp, shared = root / "home", root / "tmp", root / "efs" / "runs"
    for d in (home, ray_tmp / "ray", shared):
        d.mkdir(parents=True)
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(BOOTSTRAP))
    with LocalCluster(workers=1) as c:
        # `ray start --head` records its address in <temp>/ray/ray_current_cluster; --address auto reads it
        (ray_tmp / "ray" / "ray_current_cluster").write_text(c.address)
        env = {**c.env, "HOME": str(home), "RAY_TMPDIR": str(ray_tmp), "UCLSER_RUNS": str(shared),
               "UCLSER_CACHE": str(cache_dir)}
        env.pop("RAY_ADDRESS", None)
        yield c, env, shared


def search(head, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    c, env, _ = head
    cmd = [*c.enter, sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_bad_data_path_is_refused_before_any_gpu_is_asked_for(head):
    """The cluster has no GPU node yet, so a search whose trials want GPUs would first wait for one:
    the refusal must come before that wait (and before anything is written)."""
    shared = head[2]
    proc = search(head, "--gpus-per-trial", "1", "--data", "/nonexistent/FSDnoisy18k", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/nonexistent/FSDnoisy18k" in errors[0], proc.stderr[-3000:]
    assert "waiting for the autoscaler" not in proc.stderr and "GPU node" not in proc.stderr
    assert not any(shared.iterdir())


def test_the_bare_command_on_the_head_runs_on_the_workers_into_the_shared_folder(head):
    c, _, shared = head
    proc = search(head, "--num-samples", "2", "--max-epochs", "1")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    exp = shared / "smoke"
    table = pd.read_parquet(exp / "trials.parquet")
    assert len(table) == 2
    workers = {n.ip for n in c.nodes if n.name != "head"}
    ran_on = {r["node_ip"] for d in table.trial_dir for r in reports(exp / d)}
    assert ran_on and ran_on <= workers, ran_on
    meta = json.loads((exp / "search.json").read_text())
    assert meta["experiment_id"] and meta["storage"] == "journal:optuna.journal"
    assert {r["device"] for d in table.trial_dir for r in reports(exp / d)} == {"cpu"}  # what ran, every epoch
    # the compact console: a line per event and the status line, no config dict
    assert re.search(r"^\[ *[\d:]+\] 2/2 trials done \(\d stopped early, 0 failed\), 0 running; best kNN ",
                     proc.stdout, re.MULTILINE), proc.stdout[-3000:]
    assert "{" not in proc.stdout and "== Status ==" not in proc.stdout


@pytest.fixture(scope="module")
def gpu_node(head):
    """A worker that advertises GPU: 1, as gpu.yaml's workers do whatever their driver; this machine's
    torch is a CPU build. Added after the tests above, which need a cluster without a GPU."""
    c, _, _ = head
    node = c.add_worker("--num-gpus", "1")
    c.wait_for_nodes(3)
    return node


def test_a_trial_given_a_gpu_that_torch_cannot_use_fails_at_once(head, gpu_node):
    """The trial must fail before it trains, naming the node, the NVIDIA driver and torch's build."""
    shared = head[2]
    proc = search(head, "--name", "gpu", "--gpus-per-trial", "1", "--num-samples", "1", "--max-epochs", "1")
    out = proc.stdout + proc.stderr
    expected = f"node {gpu_node.ip}: Ray gave this trial GPU 0 but torch sees no CUDA: torch "
    assert expected in out and "(build without CUDA), no NVIDIA driver loaded" in out, out[-4000:]
    trials = [d for d in (shared / "gpu").iterdir() if d.name.startswith("trial_")]
    assert len(trials) == 1 and reports(trials[0]) == []  # not one epoch trained
    assert (trials[0] / "error.txt").exists()


def test_the_gpu_probe_checks_cuda(head, gpu_node):
    """Waiting for a GPU node ends with the same line when the node that came up cannot run CUDA."""
    c, env, _ = head
    code = ("import ray; ray.init(address='auto', include_dashboard=False)\n"
            "from uclser_tune.search.remote import GpuNodeError, wait_for_gpu_node\n"
            "try:\n    wait_for_gpu_node(120)\nexcept GpuNodeError as err:\n    print('refused:', err)\n")
    proc = subprocess.run([*c.enter, sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    refused = [line for line in proc.stdout.splitlines() if line.startswith("refused:")]
    assert refused and "but torch sees no CUDA: torch" in refused[0], (proc.stdout + proc.stderr)[-3000:]


def test_defaults_on_a_head_and_elsewhere(tmp_path, monkeypatch):
    """Locally nothing changes (a local Ray, runs/, a journal); on a head the cluster's settings."""
    from uclser_tune.search.cli import build_parser

    for var in ("RAY_ADDRESS", "UCLSER_RUNS", "UCLSER_OPTUNA_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    local = build_parser().parse_args(["--space", "smoke.yaml"])
    assert (local.address, local.storage_path, local.storage_url) == (None, "runs", None)
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(BOOTSTRAP))
    monkeypatch.setenv("UCLSER_RUNS", "/mnt/efs/uclser/runs")
    monkeypatch.setenv("UCLSER_OPTUNA_URL", "postgresql://optuna@db/optuna")
    on_head = build_parser().parse_args(["--space", "smoke.yaml"])
    assert (on_head.address, on_head.storage_path, on_head.storage_url) == (
        "auto", "/mnt/efs/uclser/runs", "postgresql://optuna@db/optuna")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    mine = build_parser().parse_args(["--space", "smoke.yaml", "--address", "127.0.0.2:6390", "--storage-path", "x"])
    assert (mine.address, mine.storage_path) == ("127.0.0.2:6390", "x")  # flags win
    assert build_parser().parse_args(["--space", "smoke.yaml"]).address == "10.0.0.5:6379"


def test_the_cuda_check_reads_the_trials_device(monkeypatch):
    import torch

    from uclser_tune.search.trainable import NoCudaError, check_cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("auto", "cuda"):
        with pytest.raises(NoCudaError, match="node 10.0.0.9: Ray gave this trial GPU 0 but torch sees no CUDA"):
            check_cuda([0], "10.0.0.9", device)
    check_cuda([0], "10.0.0.9", "cpu")  # an explicit CPU: the GPU is only a scheduling slot
    check_cuda([], "10.0.0.9")  # no GPU given, nothing to check
