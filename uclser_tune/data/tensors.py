"""Clips of one split as device tensors: all frames in one flat array plus per-clip offsets.

Torch only, so the views, training and evaluation layers never need pandas or librosa.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClipTensors:
    frames: torch.Tensor  # (N_frames, n_mels)
    offsets: torch.Tensor  # (n_clips,) long: first frame of each clip
    lengths: torch.Tensor  # (n_clips,) long: frames per clip
    labels: torch.Tensor  # (n_clips,) long: class ids
    clip_ids: list[str]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ClipTensors:
        return ClipTensors(self.frames.to(device=device, dtype=dtype), self.offsets.to(device),
                           self.lengths.to(device), self.labels.to(device), self.clip_ids)

    def subset(self, idx: torch.Tensor | list[int]) -> ClipTensors:
        """The chosen clips, re-packed into a new flat frame array."""
        idx = torch.as_tensor(idx, device=self.lengths.device)
        idx = idx.nonzero()[:, 0] if idx.dtype == torch.bool else idx.long()
        lengths = self.lengths[idx]
        offsets = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(self.offsets[idx] - offsets, lengths) + torch.arange(
            int(lengths.sum()), device=lengths.device)
        ids = [self.clip_ids[i] for i in idx.tolist()]
        return ClipTensors(self.frames[rows], offsets, lengths, self.labels[idx], ids)
