"""Encoders by name (solo-learn style registry), the projection head and classifier wrappers."""

from __future__ import annotations

from torch import nn

from uclser_tune.models.crnn import Crnn
from uclser_tune.models.head import Classifier, ContrastiveModel, ProjectionHead
from uclser_tune.models.resnet import ResNet18
from uclser_tune.models.vgg_like import VggLike

ENCODERS: dict[str, type[nn.Module]] = {"resnet18": ResNet18, "vgg_like": VggLike, "crnn": Crnn}


def build_encoder(name: str, width: float = 1.0) -> nn.Module:
    """An encoder taking (B, 1, 101, 96) to h (B, embed_dim); ``width`` scales its channels."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; allowed: {', '.join(ENCODERS)}")
    if not width > 0:
        raise ValueError(f"encoder width must be > 0; got {width}")
    return ENCODERS[name](width)


__all__ = ["ENCODERS", "Classifier", "ContrastiveModel", "ProjectionHead", "build_encoder"]
