"""Views: patch sampling, mix-back and batched augmentations (torch only)."""

from uclser_tune.views.mixback import mixback
from uclser_tune.views.ops import OPS, build_op, validate_op_params
from uclser_tune.views.pipeline import ViewParams, ViewPipeline
from uclser_tune.views.sampling import gather_patches, sample_starts

__all__ = ["OPS", "ViewParams", "ViewPipeline", "build_op", "gather_patches", "mixback", "sample_starts",
           "validate_op_params"]
