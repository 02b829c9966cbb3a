"""Shared fixtures: a tiny synthetic data set and feature store (built once per session), random clips."""

from __future__ import annotations

import os

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
