"""mix-back: blend each view with a patch of another clip, in linear power (SPEC §2)."""

from __future__ import annotations

import math

import torch

LN10 = math.log(10.0)


def mixback(fg: torch.Tensor, bg: torch.Tensor, lam: torch.Tensor, energy_adjust: bool = True) -> torch.Tensor:
    """log10((1-λ)·P + λ·g·B) with P = 10^fg, B = 10^bg on (B, T, F) log10 patches and λ of shape (B,).

    With ``energy_adjust`` the background is first scaled to the foreground's energy (g = ΣP/ΣB over
    the patch), so for λ ≤ 0.05 the foreground stays ≥ 12.8 dB above it; otherwise g = 1.
    """
    p = torch.exp(fg.float() * LN10)
    b = torch.exp(bg.float() * LN10)
    lam = lam.float().view(-1, 1, 1)
    weight = lam * p.sum((1, 2), keepdim=True) / b.sum((1, 2), keepdim=True) if energy_adjust else lam
    return torch.log10(torch.addcmul((1 - lam) * p, weight, b)).to(fg.dtype)
