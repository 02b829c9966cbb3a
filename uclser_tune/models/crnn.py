"""The reference's CRNN encoder: 948,116 parameters with a 20-class classifier, as in the reference code."""

from __future__ import annotations

import torch
from torch import nn

from uclser_tune.models.blocks import conv_bn_relu, scaled


class Crnn(nn.Module):
    """3 conv5×5+BN+ReLU+max-pool blocks (pools (2,5), (2,4), (2,2) over (time, mel)) → (B, 12, C·2)
    → bidirectional GRU; h = forward output ⊙ backward output at the last step, as the reference does."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = scaled(128, width)
        hidden = scaled(64, width)
        self.features = nn.Sequential(
            conv_bn_relu(1, c, 5), nn.MaxPool2d((2, 5)),
            conv_bn_relu(c, c, 5), nn.MaxPool2d((2, 4)),
            conv_bn_relu(c, c, 5), nn.MaxPool2d((2, 2)),
        )
        self.gru = nn.GRU(input_size=2 * c, hidden_size=hidden, batch_first=True, bidirectional=True)
        self.embed_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, T', F')
        x = x.permute(0, 2, 3, 1).flatten(2)  # (B, T', F'·C): the reference's feature order
        out, _ = self.gru(x)  # (B, T', 2·hidden)
        d = self.embed_dim
        # the reference takes both directions' *outputs* at the last step: the backward one has seen
        # only that step (not the backward final state, which has seen the whole sequence)
        return out[:, -1, :d] * out[:, -1, d:]
