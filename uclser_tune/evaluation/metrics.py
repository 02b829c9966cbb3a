"""Classification metrics on class-id tensors."""

from __future__ import annotations

import torch


def balanced_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
    classes, inverse = torch.unique(y_true, return_inverse=True)
    hits = torch.zeros(len(classes), dtype=torch.float64, device=y_true.device)
    hits.index_add_(0, inverse, (y_true == y_pred).double())
    counts = torch.bincount(inverse, minlength=len(classes)).double()
    return float((hits / counts).mean())


def accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    return float((torch.as_tensor(y_true) == torch.as_tensor(y_pred)).double().mean())
