"""mix-back: blend each view with a patch of another clip, in linear power, as in the paper and the reference code."""

from __future__ import annotations

import math

import torch

LN10 = math.log(10.0)


def mixback(fg: torch.Tensor, bg: torch.Tensor, lam: torch.Tensor,
            energy_adjust: bool = True) -> torch.Tensor:
    """log10((1-λ)·P + λ·g·B) with P = 10^fg, B = 10^bg on (B, T, F) log10 patches and λ of shape (B,).

    With ``energy_adjust`` the background is first scaled to the foreground's energy (g = ΣP/ΣB over
    the patch), so for λ ≤ 0.05 the foreground stays ≥ 12.8 dB above it; otherwise g = 1.
    Float32 throughout, inputs untouched; (1-λ) is folded into the exponent. Two new tensors, the
    rest in place: on a CPU, fresh batch-sized allocations (page faults) cost as much as the maths.
    """
    lam = lam.to(torch.float64).view(-1, 1, 1)
    p = torch.add(torch.log1p(-lam).float(), fg, alpha=LN10).exp_()  # (1-λ)·P = exp(ln(1-λ) + ln10·fg)
    b = torch.mul(bg.float(), LN10).exp_()
    ratio = lam  # of B, next to (1-λ)·P
    if energy_adjust:  # λ·ΣP/ΣB = λ/(1-λ) · Σ(1-λ)P / ΣB
        ratio = lam / (1 - lam) * p.sum((1, 2), keepdim=True).double() / b.sum((1, 2), keepdim=True).double()
    return p.addcmul_(b, ratio.float()).log10_()
