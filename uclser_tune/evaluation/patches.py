"""Evaluation patches: every clip cut into 101-frame patches with hop 50, embedded in batches."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from uclser_tune.evaluation.knn import knn_scores


def eval_patch_index(lengths: torch.Tensor, patch: int = 101, hop: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(clip index, start frame) of every evaluation patch; the tail that does not fill a patch is dropped."""
    counts = (lengths - patch).clamp(min=0) // hop + 1
    clip_index = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), counts)
    first = torch.cumsum(counts, 0) - counts
    starts = (torch.arange(int(counts.sum()), device=lengths.device) - first[clip_index]) * hop
    return clip_index, starts


@torch.inference_mode()
def embed_patches(model: nn.Module, clips: Any, mean: float, std: float, patch: int = 101, hop: int = 50,
                  batch_size: int = 512, amp_dtype: torch.dtype | None = None,
                  output: str = "z") -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (P, D) of every evaluation patch (``output`` 'z' or 'h' of a ContrastiveModel, or the
    plain output of any other model) and each patch's clip index, in eval mode (mode restored after)."""
    from uclser_tune.views.sampling import gather_patches

    clip_index, starts = eval_patch_index(clips.lengths, patch, hop)
    device = clips.frames.device
    was_training = model.training
    model.eval()
    out = []
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    try:
        for lo in range(0, len(starts), batch_size):
            sel = slice(lo, lo + batch_size)
            x = gather_patches(clips.frames, clips.offsets[clip_index[sel]], starts[sel], patch).float()
            with autocast:
                y = model(((x - mean) / std).unsqueeze(1))
            if isinstance(y, tuple):
                y = y[1] if output == "z" else y[0]
            out.append(y.float())
    finally:
        model.train(was_training)
    return torch.cat(out), clip_index


def evaluate_knn(model: nn.Module, clips: Any, mean: float, std: float, k: int = 200, hop: int = 50,
                 batch_size: int = 512, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """kNN scores of ``clips`` (the split is its own bank) from the model's z embeddings."""
    z, clip_index = embed_patches(model, clips, mean, std, hop=hop, batch_size=batch_size, amp_dtype=amp_dtype)
    return knn_scores(z, clip_index, clips.labels[clip_index], k)
