"""The view pipeline: two patches per clip → mix-back → ops in a configured order → normalisation."""

from __future__ import annotations

from typing import Any

import torch

from uclser_tune.views.mixback import mixback
from uclser_tune.views.ops import build_op
from uclser_tune.views.sampling import gather_patches, randint_below, sample_starts


class ViewPipeline:
    """Builds both views of a batch of clips on the clips' device. The op order is data (a list of
    names), so a search can set it; ``order='random_per_sample'`` gives every view its own order."""

    def __init__(self, ops: list[str], op_params: dict[str, dict[str, Any]], mean: float, std: float, *,
                 sampling: str = "random", separation: int = 0, patch_frames: int = 101, mixback: bool = True,
                 mixback_alpha: float = 0.05, mixback_energy_adjust: bool = True, order: str = "fixed"):
        self.ops = [build_op(name, op_params.get(name)) for name in ops]
        self.mean, self.std = float(mean), float(std)
        self.sampling, self.separation, self.patch = sampling, separation, patch_frames
        self.use_mixback, self.alpha, self.energy_adjust = mixback, mixback_alpha, mixback_energy_adjust
        self.order = order
        self.stats = {"fallbacks": 0}

    @classmethod
    def from_config(cls, views: Any, mean: float, std: float) -> ViewPipeline:
        """From a ``uclser_tune.config.ViewsConfig``."""
        return cls(views.ops, views.op_params, mean, std, sampling=views.sampling, separation=views.separation,
                   patch_frames=views.patch_frames, mixback=views.mixback, mixback_alpha=views.mixback_alpha,
                   mixback_energy_adjust=views.mixback_energy_adjust, order=views.order)

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The ops on a (B, T, F) batch, in the configured order or a random order per sample."""
        if self.order == "fixed" or len(self.ops) < 2:
            for op in self.ops:
                x = op(x, gen)
            return x
        n = len(self.ops)
        perm = torch.rand(x.shape[0], n, generator=gen, device=x.device).argsort(1)  # (B, n) op index per step
        for step in range(n):
            for k, op in enumerate(self.ops):
                rows = (perm[:, step] == k).nonzero()[:, 0]
                if len(rows):
                    x = x.index_copy(0, rows, op(x[rows], gen))
        return x

    def background(self, clips: Any, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random patch of a random *other* clip for every clip of the batch."""
        n = len(clips.lengths)
        other = (idx + 1 + randint_below(torch.full_like(idx, n - 1), gen)) % n
        starts = randint_below((clips.lengths[other] - self.patch).clamp(min=0) + 1, gen)
        return gather_patches(clips.frames, clips.offsets[other], starts, self.patch).float()

    def __call__(self, clips: Any, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views, (B, 1, T, F) each, normalised with the global mean/std."""
        s1, s2, fallbacks = sample_starts(clips.lengths[idx], self.patch, self.sampling, self.separation, gen)
        self.stats["fallbacks"] += fallbacks
        offsets = clips.offsets[idx]
        views = [gather_patches(clips.frames, offsets, s, self.patch).float() for s in (s1, s2)]
        if self.use_mixback:
            lam = self.alpha * torch.rand(len(idx), generator=gen, device=idx.device)
            views = [mixback(v, self.background(clips, idx, gen), lam, self.energy_adjust) for v in views]
        return tuple(((self.augment(v, gen) - self.mean) / self.std).unsqueeze(1) for v in views)
