"""The view pipeline: two patches per clip → mix-back → ops in a configured order → normalisation.

Everything random is drawn first (``sample``, from one explicit generator, on the clips' device),
then rendered deterministically (``render``), both views of the batch as one (2B, T, F) tensor so
that every op runs batched (on a CPU in cache-sized chunks of views). The split lets the tests
render the pipeline's own draws with the per-sample NumPy reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uclser_tune.views.mixback import mixback
from uclser_tune.views.ops import Params, build_op
from uclser_tune.views.sampling import SAMPLING_MODES, gather_patches, randint_below, sample_starts

ORDERS = ("fixed", "random_per_sample")


@dataclass
class ViewParams:
    """Every random choice behind one batch of views, one row per view: rows [0, B) are the first
    views of the clips, rows [B, 2B) the second ones. The mix-back fields are None when it is off."""

    clips: torch.Tensor  # (2B,) the clip of each view
    starts: torch.Tensor  # (2B,) first frame of the view's patch within its clip
    bg_clips: torch.Tensor | None  # (2B,) background clip: never the clip, nor its other view's
    bg_starts: torch.Tensor | None  # (2B,)
    lam: torch.Tensor | None  # (2B,) λ, the same for a clip's two views
    ops: list[Params]  # one per op of the pipeline, each value with 2B rows
    order: torch.Tensor | None  # (2B, n_ops) index of the op applied at each step ('random_per_sample')

    def rows(self, sl: slice) -> ViewParams:
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[sl]

        ops = [{k: v[sl] for k, v in p.items()} for p in self.ops]
        return ViewParams(self.clips[sl], self.starts[sl], cut(self.bg_clips), cut(self.bg_starts),
                          cut(self.lam), ops, cut(self.order))


class ViewPipeline:
    """Builds both views of a batch of clips on the clips' device. The op order is data (a list of
    names), so a search can set it; ``order='random_per_sample'`` gives every view its own order.
    ``stats['fallbacks']`` counts clips too short for the configured patch separation."""

    #: views rendered at a time on a CPU: (64, 101, 96) float32 intermediates stay in cache, and
    #: glibc reuses their memory instead of page-faulting fresh batch-sized buffers every call
    cpu_chunk = 64

    def __init__(self, ops: list[str], op_params: dict[str, dict[str, Any]], mean: float, std: float, *,
                 sampling: str = "random", separation: int = 0, patch_frames: int = 101, mixback: bool = True,
                 mixback_alpha: float = 0.05, mixback_energy_adjust: bool = True, order: str = "fixed"):
        if order not in ORDERS:
            raise ValueError(f"unknown op order {order!r}; allowed: {', '.join(ORDERS)}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {sampling!r}; allowed: {', '.join(SAMPLING_MODES)}")
        self.ops = [build_op(name, op_params.get(name)) for name in ops]
        self.mean, self.std = float(mean), float(std)
        self.sampling, self.separation, self.patch = sampling, separation, patch_frames
        self.use_mixback, self.alpha, self.energy_adjust = mixback, mixback_alpha, mixback_energy_adjust
        self.order = order
        self.stats = {"fallbacks": 0}

    @classmethod
    def from_config(cls, views: Any, mean: float, std: float) -> ViewPipeline:
        """From a ``uclser_tune.config.ViewsConfig``."""
        return cls(views.ops, views.op_params, mean, std, sampling=views.sampling,
                   separation=views.separation, patch_frames=views.patch_frames, mixback=views.mixback,
                   mixback_alpha=views.mixback_alpha, mixback_energy_adjust=views.mixback_energy_adjust,
                   order=views.order)

    def __call__(self, clips: Any, idx: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views of the clips ``idx``, (B, 1, T, F) each, normalised with the global mean/std."""
        views = self.render(clips, self.sample(clips, idx, gen))
        return views[: len(idx)], views[len(idx) :]

    def sample(self, clips: Any, idx: torch.Tensor, gen: torch.Generator) -> ViewParams:
        """Draw every random parameter of both views of the clips ``idx`` (``clips``: ClipTensors-like,
        frames (N, F), offsets and lengths)."""
        dev = clips.frames.device
        idx = idx.to(dev)
        n, b = len(clips.lengths), len(idx)
        if int(clips.lengths.min()) < self.patch:
            raise ValueError(f"every clip needs at least patch_frames={self.patch} frames")
        s1, s2, fallbacks = sample_starts(clips.lengths[idx], self.patch, self.sampling, self.separation, gen)
        self.stats["fallbacks"] += fallbacks
        rows = idx.repeat(2)
        bg_clips = bg_starts = lam = None
        if self.use_mixback:
            if n < 2:
                raise ValueError("mix-back needs at least two clips")
            k1 = 1 + randint_below(torch.full((b,), n - 1, device=dev), gen)  # offsets to another clip
            k2 = 1 + randint_below(torch.full((b,), max(n - 2, 1), device=dev), gen)
            k2 = k2 + (k2 >= k1) if n > 2 else k2  # skip the first view's background
            bg_clips = (rows + torch.cat([k1, k2])) % n
            bg_starts = randint_below(clips.lengths[bg_clips] - self.patch + 1, gen)
            lam = (self.alpha * torch.rand(b, generator=gen, device=dev)).repeat(2)
        shape = torch.Size((2 * b, self.patch, clips.frames.shape[1]))
        ops = [op.sample(shape, gen, dev) for op in self.ops]
        order = None
        if self.order == "random_per_sample" and len(self.ops) > 1:
            order = torch.rand(2 * b, len(self.ops), generator=gen, device=dev).argsort(1)
        return ViewParams(rows, torch.cat([s1, s2]), bg_clips, bg_starts, lam, ops, order)

    def render(self, clips: Any, params: ViewParams) -> torch.Tensor:
        """The views of ``params``, (rows, 1, T, F), deterministically; on a CPU in chunks of rows
        (every view is independent, so the result does not depend on the chunking)."""
        n = len(params.starts)
        step = n if clips.frames.device.type != "cpu" else self.cpu_chunk
        if step >= n:
            return self._render(clips, params).unsqueeze(1)
        out = torch.empty((n, 1, self.patch, clips.frames.shape[1]), device=clips.frames.device)
        for lo in range(0, n, step):
            out[lo : lo + step, 0] = self._render(clips, params.rows(slice(lo, lo + step)))
        return out

    def _render(self, clips: Any, params: ViewParams) -> torch.Tensor:
        frames = clips.frames
        x = gather_patches(frames, clips.offsets[params.clips], params.starts, self.patch)
        if self.use_mixback:
            bg = gather_patches(frames, clips.offsets[params.bg_clips], params.bg_starts, self.patch)
            x = mixback(x, bg, params.lam, self.energy_adjust)
        else:
            x = x.float()
        x = self._augment(x, params)
        return x.sub_(self.mean).div_(self.std)  # x is always a fresh tensor here

    def _augment(self, x: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """The ops in the configured order; with a per-sample order, step by step: at each step every
        op transforms (batched) the views whose order has it at that step."""
        if params.order is None:
            for op, p in zip(self.ops, params.ops):
                x = op.masked(x, p)
            return x
        for step in range(len(self.ops)):
            for k, (op, p) in enumerate(zip(self.ops, params.ops)):
                rows = (params.order[:, step] == k).nonzero()[:, 0]
                if len(rows):
                    x.index_copy_(0, rows, op.masked(x[rows], {key: v[rows] for key, v in p.items()}))
        return x
