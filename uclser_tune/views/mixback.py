"""mix-back: blend each view with a patch of another clip, in linear power (SPEC §2)."""

from __future__ import annotations

import torch


def mixback(fg: torch.Tensor, bg: torch.Tensor, lam: torch.Tensor, energy_adjust: bool = True) -> torch.Tensor:
    """log10((1-λ)·P + λ·g·B) with P = 10^fg, B = 10^bg on (B, T, F) log10 patches and λ of shape (B,).

    With ``energy_adjust`` the background is first scaled to the foreground's energy (g = ΣP/ΣB over
    the patch), so for λ ≤ 0.05 the foreground stays ≥ 12.8 dB above it; otherwise g = 1.
    """
    p = torch.pow(10.0, fg.float())
    b = torch.pow(10.0, bg.float())
    lam = lam.float().view(-1, 1, 1)
    if energy_adjust:
        gain = p.sum((1, 2), keepdim=True, dtype=torch.float64) / b.sum((1, 2), keepdim=True, dtype=torch.float64)
        b = b * gain.float()
    return torch.log10((1 - lam) * p + lam * b).to(fg.dtype)
