"""Evaluation: the kNN protocol and classification metrics (torch only)."""

from uclser_tune.evaluation.knn import knn_balanced_accuracy, knn_predict, knn_scores
from uclser_tune.evaluation.metrics import accuracy, balanced_accuracy
from uclser_tune.evaluation.patches import embed_patches, eval_patch_index, evaluate_knn

__all__ = ["accuracy", "balanced_accuracy", "embed_patches", "eval_patch_index", "evaluate_knn",
           "knn_balanced_accuracy", "knn_predict", "knn_scores"]
