"""Where the two views of a clip come from: patch start frames, and one gather for a whole batch."""

from __future__ import annotations

import torch


def randint_below(high: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-element uniform integers in [0, high) (high ≥ 1), drawn on high's device."""
    u = torch.rand(high.shape, generator=gen, device=high.device)
    return torch.minimum((u * high).long(), high - 1)


def sample_starts(
    lengths: torch.Tensor, patch: int, mode: str, separation: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Start frames (s1, s2) of the two views per clip, and how many clips fell back.

    ``random``: independent uniform starts; ``same``: s2 = s1; ``separation``: |s1 - s2| = d with a
    random direction. A clip too short for d gets the largest separation it allows (counted).
    """
    room = (lengths - patch).clamp(min=0)  # the last valid start
    if mode == "random":
        return randint_below(room + 1, gen), randint_below(room + 1, gen), 0
    if mode == "same":
        s = randint_below(room + 1, gen)
        return s, s.clone(), 0
    if mode != "separation":
        raise ValueError(f"unknown sampling mode {mode!r}; allowed: random, same, separation")
    d = room.clamp(max=separation)
    low = randint_below(room - d + 1, gen)
    flip = torch.rand(lengths.shape, generator=gen, device=lengths.device) < 0.5
    s1 = torch.where(flip, low + d, low)
    s2 = torch.where(flip, low, low + d)
    return s1, s2, int((d < separation).sum())


def gather_patches(frames: torch.Tensor, offsets: torch.Tensor, starts: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, patch, F) patches of the flat frame array, in one indexing operation."""
    rows = (offsets + starts)[:, None] + torch.arange(patch, device=frames.device)
    return frames[rows]
