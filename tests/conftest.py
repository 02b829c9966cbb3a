"""Shared fixtures: a tiny synthetic data set and feature store (built once per session), one real smoke
search whose outputs several modules read, random clips."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    os.environ["UCLSER_CACHE"] = str(path)  # subprocesses (CLI tests, Ray workers) share the cache
    return path


@pytest.fixture(scope="session")
def tiny_store(cache_dir):
    from uclser_tune.config import DataConfig
    from uclser_tune.data.store import open_store

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

    root = tmp_path_factory.mktemp("smoke_search")
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--name", "smoke", "--seed", "0",
           "--storage-path", str(root), "--node-ip-address", "127.0.0.5", "--num-samples", "6"]
    out = children.run(cmd, None, "the shared smoke search")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = pd.read_parquet(root / "smoke" / "trials.parquet")
    assert table.mixback.nunique() == 2, f"mix-back did not vary over the trials: {table.mixback.tolist()}"
    return SmokeSearch(root / "smoke", out.stdout, out.stderr)


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
