"""NT-Xent (SimCLR), as a small pure function."""

from __future__ import annotations

import torch
from torch import nn


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy over the 2N views of N positive pairs.

    Rows are L2-normalised here (cosine similarity, as SimCLR); logits z·zᵀ/τ without the diagonal;
    each view's target is the other view of its clip; mean over the 2N rows. Computed in float32 so
    that bf16/fp16 embeddings from mixed precision do not overflow at small τ.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(logits, targets)
