"""Projection head, the encoder+head pair used in pre-training, and a linear classifier on h."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear(d_h, hidden) → BN1d → ReLU → Linear(hidden, out) → L2-normalise = z."""

    def __init__(self, d_h: int, hidden: int = 512, out: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_h, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(h), dim=1)


class ContrastiveModel(nn.Module):
    """encoder → h → head → z; forward returns both."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.head(h)


class Classifier(nn.Module):
    """A new Linear on the encoder's h: linear evaluation, fine-tuning and the supervised baseline."""

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(encoder.embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))
