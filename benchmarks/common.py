"""Shared helpers for the benchmarks: FSDnoisy18k-like random clips and a timer."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from uclser_tune.data.tensors import ClipTensors


def fsd_like_clips(n: int, seed: int = 0) -> ClipTensors:
    """Random log10 mel frames with FSDnoisy18k-like clip lengths (1-30 s, median ≈ 3 s)."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(np.exp(rng.normal(np.log(3.0), 0.8, n)), 1.0, 30.0)
    lengths = torch.from_numpy((1 + seconds * 22050 // 220).astype(np.int64))
    offsets = torch.cumsum(lengths, 0) - lengths
    frames = torch.from_numpy(rng.normal(-2.0, 1.0, (int(lengths.sum()), 96)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 20, n))
    return ClipTensors(frames, offsets, lengths, labels, [str(i) for i in range(n)])


def timed(fn: Callable[[], object], repeat: int, sync: torch.device | None = None) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
