"""Training loops: contrastive pre-training and the downstream tasks. No Ray or Optuna here."""

from uclser_tune.training.checkpoint import load_checkpoint, save_checkpoint
from uclser_tune.training.downstream import (
    TASKS,
    DownstreamLossError,
    DownstreamResult,
    NoTrainingClipsError,
    encoder_state_of,
    run_task,
    stratified_split,
)
from uclser_tune.training.pretrain import NonFiniteLossError, PretrainResult, build_model, config_of, pretrain

__all__ = [
    "TASKS",
    "DownstreamLossError",
    "DownstreamResult",
    "NoTrainingClipsError",
    "NonFiniteLossError",
    "PretrainResult",
    "build_model",
    "config_of",
    "encoder_state_of",
    "load_checkpoint",
    "pretrain",
    "run_task",
    "save_checkpoint",
    "stratified_split",
]
