"""Atomic, weights-only checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: nothing in it can run code. It is written to a temporary file
and renamed, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uclser_tune.atomic import replacing

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` (a directory gets ``checkpoint.pt`` inside) atomically."""
    path = Path(path)
    if path.suffix != ".pt":
        path.mkdir(parents=True, exist_ok=True)
        path = path / CHECKPOINT_FILE
    with replacing(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, or ``checkpoint.pt`` inside a directory, without unpickling code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return torch.load(path, map_location=map_location, weights_only=True)
