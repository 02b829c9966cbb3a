"""Training loops: contrastive pre-training and the downstream tasks. No Ray or Optuna here."""

from uclser_tune.training.checkpoint import load_checkpoint, save_checkpoint
from uclser_tune.training.pretrain import NonFiniteLossError, PretrainResult, build_model, config_of, pretrain

__all__ = [
    "NonFiniteLossError",
    "PretrainResult",
    "build_model",
    "config_of",
    "load_checkpoint",
    "pretrain",
    "save_checkpoint",
]
