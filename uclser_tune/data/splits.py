"""The seeded clean split (NumPy only, so the training layer can use it without pandas)."""

from __future__ import annotations

import numpy as np


def clean_split(labels: np.ndarray, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-stratified, disjoint split of the clean set (the reference's split overlaps).

    Each class gives round(val_fraction · n) clips to validation, at least one when it has two or more;
    a class with one clip stays in training.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx).astype(np.int64)
    return train_idx, val_idx
