"""The reference's VGG-like encoder: 290,292 parameters with a 20-class classifier, as in the reference code."""

from __future__ import annotations

import torch
from torch import nn

from uclser_tune.models.blocks import conv_bn_relu, scaled


class VggLike(nn.Module):
    """6 conv3×3+BN+ReLU, 1→32→32→32 (pool 2)→64→64 (pool 2)→128 (pool 2); concat[global max, global
    mean] → Linear(256, 512) + ReLU. h ∈ R^512 at every width."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c32, c64, c128 = (scaled(c, width) for c in (32, 64, 128))
        self.features = nn.Sequential(
            conv_bn_relu(1, c32, 3), conv_bn_relu(c32, c32, 3), conv_bn_relu(c32, c32, 3), nn.MaxPool2d(2),
            conv_bn_relu(c32, c64, 3), conv_bn_relu(c64, c64, 3), nn.MaxPool2d(2),
            conv_bn_relu(c64, c128, 3), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(2 * c128, 512), nn.ReLU(inplace=True))
        self.embed_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        pooled = torch.cat([x.amax((2, 3)), x.mean((2, 3))], dim=1)
        return self.fc(pooled)
