"""Shared fixtures: a tiny synthetic data set and feature store (built once per session), one real smoke
search whose outputs several modules read, random clips.

``make test`` runs the suite in 2 pytest-xdist workers, each test file whole in one worker
(``--dist loadfile``: a module's Ray cluster and its tests stay together). The store and the smoke
search are made once per session all the same: the workers share one cache directory, where the store
builds under its own lock, and the first worker to need the smoke search runs it while holding a lock
on its directory, which the other waits on."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import children
import pytest
import torch

from uclser_tune.data.tensors import ClipTensors


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Record the test's pytest-timeout limit (its timeout mark, else --timeout or the ini default), so
    that ``children``'s waits without a timeout of their own end just before it, with the child's output."""
    mark = item.get_closest_marker("timeout")
    limit = (mark.args[0] if mark and mark.args else mark.kwargs.get("timeout") if mark else None)
    if limit is None:
        limit = item.config.getoption("timeout", None) or item.config.getini("timeout")
    children.start_test(float(limit) if limit else None)


def pytest_collection_modifyitems(config, items):
    """The files with slow tests first, so that under xdist a long file does not start last while the
    other worker has nothing left (the order within a file is kept)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # a stable sort: files and tests keep their order


def session_dir(tmp_path_factory, name: str) -> Path:
    """``name`` in the session's temp dir, shared by every xdist worker (whose own base temp dirs sit
    side by side in the session's)."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = session_dir(tmp_path_factory, "cache")
    os.environ["UCLSER_CACHE"] = str(path)  # subprocesses (CLI tests, Ray workers) share the cache
    return path


@pytest.fixture(scope="session")
def tiny_store(cache_dir):
    from uclser_tune.config import DataConfig
    from uclser_tune.data.store import open_store

    # open_store builds under its own file lock: one worker builds the store, the other waits and opens it
    return open_store(DataConfig(root="synthetic", synth_size="tiny", cache_dir=str(cache_dir)))


@dataclass(frozen=True)
class SmokeSearch:
    exp: Path  # the experiment dir
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def smoke_search(tmp_path_factory, tiny_store) -> SmokeSearch:
    """One real search of search_spaces/smoke.yaml (6 trials, ASHA, sampler seed 0, Ray on 127.0.0.5), run
    once per session for the tests that only read what it wrote (tests/test_search_e2e.py,
    tests/test_analysis.py); a test that changes the experiment works on a copy. Seed 0: the seeded
    start-up draws put mix-back on in some trials and off in others (checked here, so that no reader
    depends on chance)."""
    import pandas as pd

    from uclser_tune.data.store import locked

    root = session_dir(tmp_path_factory, "smoke_search")
    with locked(root / ".lock"):  # run by the first worker that needs it; the others read what it left
        if not (root / "output.json").exists():
            cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--name", "smoke", "--seed",
                   "0", "--storage-path", str(root), "--node-ip-address", "127.0.0.5", "--num-samples", "6"]
            out = children.run(cmd, None, "the shared smoke search")
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            (root / "output.json").write_text(json.dumps({"stdout": out.stdout, "stderr": out.stderr}))
    output = json.loads((root / "output.json").read_text())
    table = pd.read_parquet(root / "smoke" / "trials.parquet")
    assert table.mixback.nunique() == 2, f"mix-back did not vary over the trials: {table.mixback.tolist()}"
    return SmokeSearch(root / "smoke", output["stdout"], output["stderr"])


def make_clips(n: int = 6, seed: int = 0, min_len: int = 101, max_len: int = 400, n_classes: int = 3) -> ClipTensors:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    offsets = torch.cumsum(lengths, 0) - lengths
    frames = torch.randn(int(lengths.sum()), 96, generator=g) - 2.0
    labels = torch.arange(n) % n_classes
    return ClipTensors(frames, offsets, lengths, labels, [f"c{i}" for i in range(n)])


@pytest.fixture
def clips():
    return make_clips()
