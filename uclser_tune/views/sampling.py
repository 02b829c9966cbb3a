"""Where the two views of a clip come from: patch start frames, and one gather for a whole batch."""

from __future__ import annotations

import torch

SAMPLING_MODES = ("random", "same", "separation")


def randint_below(high: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-element uniform integers in [0, high) (high ≥ 1), drawn on high's device.

    ``torch.randint`` takes one scalar bound; per-sample bounds (clip lengths, crop room) need this.
    """
    u = torch.rand(high.shape, generator=gen, device=high.device, dtype=torch.float64)
    return torch.minimum((u * high).long(), high - 1)


def sample_starts(
    lengths: torch.Tensor, patch: int, mode: str, separation: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Start frames (s1, s2) of the two views per clip, and how many clips fell back.

    ``random``: s1, s2 independent and uniform over the valid starts 0..L-patch; ``same``: s2 = s1;
    ``separation``: |s1 - s2| = d with a random direction, the pair placed uniformly. A clip shorter
    than patch + d gets the largest separation it allows (L - patch); those clips are counted.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; allowed: {', '.join(SAMPLING_MODES)}")
    room = (lengths - patch).clamp(min=0)  # the last valid start
    if mode == "random":
        return randint_below(room + 1, gen), randint_below(room + 1, gen), 0
    if mode == "same":
        s = randint_below(room + 1, gen)
        return s, s.clone(), 0
    d = room.clamp(max=separation)
    low = randint_below(room - d + 1, gen)
    flip = torch.rand(lengths.shape, generator=gen, device=lengths.device) < 0.5
    return torch.where(flip, low + d, low), torch.where(flip, low, low + d), int((d < separation).sum())


def gather_patches(frames: torch.Tensor, offsets: torch.Tensor, starts: torch.Tensor,
                   patch: int) -> torch.Tensor:
    """(B, patch, F) patches of the flat (N, F) frame array, as one row gather (frames' dtype)."""
    rows = (offsets + starts)[:, None] + torch.arange(patch, device=frames.device)
    return frames.index_select(0, rows.flatten()).view(len(starts), patch, frames.shape[1])
