"""Batched spectrogram augmentations, looked up by name.

Each op acts on a whole (B, T, F) batch on its device: ``sample`` draws per-sample parameters (and a
per-sample apply mask with probability ``p``) from an explicit generator, ``apply`` is the
deterministic transform given those parameters. Keeping the two apart lets the tests feed the same
parameters to the per-sample NumPy reference. The registry keys are the names used in configs,
search spaces and plots. Defaults are the reference's ranges (SPEC §2).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from uclser_tune.views.sampling import randint_below

Params = dict[str, torch.Tensor]


def _u(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _ints(n: int, lo: int, hi: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform integers in [lo, hi]."""
    return lo + randint_below(torch.full((n,), hi - lo + 1, device=device), gen)


class Op(nn.Module):
    """Base: parameter validation, the apply mask, and ``forward = where(mask, apply(x), x)``."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    limits: ClassVar[dict[str, tuple[float, float]]]  # inclusive bounds per parameter

    def __init__(self, **params: Any):
        super().__init__()
        self.params = self.validate(params)

    @classmethod
    def validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} of op {cls.name}; allowed: {', '.join(cls.defaults)}")
        full = {**cls.defaults, **params}
        for key, value in full.items():
            lo, hi = cls.limits[key]
            integer = isinstance(cls.defaults[key], int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
                raise ValueError(f"{cls.name}.{key}: got {value!r}; expected {'an integer' if integer else 'a number'}")
            if not lo <= value <= hi:
                raise ValueError(f"{cls.name}.{key}: got {value!r}; allowed range [{lo}, {hi}]")
            full[key] = int(value) if integer else float(value)
        cls.check(full)
        return full

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """Relations between parameters (e.g. min ≤ max); raise ValueError naming them."""

    def sample(self, x: torch.Tensor, gen: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.params["p"]
        if p <= 0:
            return x
        params = self.sample(x, gen)
        if p >= 1:  # always applied: skip drawing the mask and the extra pass of a select
            return self.apply(x, params)
        mask = torch.rand(x.shape[0], generator=gen, device=x.device) < p
        return torch.where(mask.view(-1, 1, 1), self.apply(x, params), x)


def _ordered(cls: type[Op], low: str, high: str, params: dict[str, Any]) -> None:
    if params[low] > params[high]:
        raise ValueError(f"{cls.name}.{low} ({params[low]}) must be <= {cls.name}.{high} ({params[high]})")


class RandomResizedCrop(Op):
    """Crop a random area/aspect region and resize it back bilinearly (torchvision's sampling).

    Area fraction ~ U(scale_min, scale_max), aspect (mel/time) log-uniform in (ratio_min, ratio_max),
    up to ``tries`` draws until the crop fits, else the whole patch. The resize is one batched
    separable bilinear gather (align_corners=False, sampling clamped to the crop).
    """

    name = "rrc"
    defaults = {"scale_min": 0.8, "scale_max": 1.0, "ratio_min": 0.75, "ratio_max": 4 / 3, "tries": 10, "p": 1.0}
    limits = {"scale_min": (0.01, 1.0), "scale_max": (0.01, 1.0), "ratio_min": (0.1, 10.0),
              "ratio_max": (0.1, 10.0), "tries": (1, 100), "p": (0.0, 1.0)}

    @classmethod
    def check(cls, params):
        _ordered(cls, "scale_min", "scale_max", params)
        _ordered(cls, "ratio_min", "ratio_max", params)

    def sample(self, x, gen):
        b, t, f = x.shape
        q, dev = self.params, x.device
        tries = q["tries"]
        area = t * f * _u(b * tries, q["scale_min"], q["scale_max"], gen, dev).view(b, tries)
        log_r = _u(b * tries, math.log(q["ratio_min"]), math.log(q["ratio_max"]), gen, dev).view(b, tries)
        ratio = torch.exp(log_r)
        w = torch.round(torch.sqrt(area * ratio)).long()  # mel bins
        h = torch.round(torch.sqrt(area / ratio)).long()  # frames
        ok = (w > 0) & (w <= f) & (h > 0) & (h <= t)
        first = torch.where(ok.any(1), ok.long().argmax(1), torch.full((b,), -1, device=dev))
        pick = first.clamp(min=0)[:, None]
        found = first >= 0
        w = torch.where(found, w.gather(1, pick)[:, 0], torch.full_like(first, f))
        h = torch.where(found, h.gather(1, pick)[:, 0], torch.full_like(first, t))
        top = randint_below(t - h + 1, gen)
        left = randint_below(f - w + 1, gen)
        return {"top": top, "left": left, "height": h, "width": w}

    def apply(self, x, params):
        b, t, f = x.shape
        gy = _crop_grid(params["top"], params["height"], t)
        gx = _crop_grid(params["left"], params["width"], f)
        grid = torch.stack([gx[:, None, :].expand(b, t, f), gy[:, :, None].expand(b, t, f)], dim=-1)
        out = nn.functional.grid_sample(x[:, None].float(), grid, mode="bilinear", padding_mode="border",
                                        align_corners=False)
        return out[:, 0].to(x.dtype)


def _crop_grid(start: torch.Tensor, size: torch.Tensor, out: int) -> torch.Tensor:
    """grid_sample coordinates that resize the crop [start, start+size) to ``out`` samples as
    ``F.interpolate(mode='bilinear', align_corners=False)`` does on the crop alone: source positions
    are clamped to the crop, so no pixel outside it ever gets weight."""
    scale = size.float()[:, None] / out
    src = ((torch.arange(out, device=size.device).float()[None, :] + 0.5) * scale - 0.5).clamp(min=0)
    src = torch.minimum(src, (size[:, None] - 1).float()) + start[:, None]
    return (2 * src + 1) / out - 1  # the crop lives inside an axis of the same length ``out``


class Compression(Op):
    """x ← c·x on raw log10 values: c ~ U(α, 1) compresses (α < 1), c ~ U(1, α) expands (α > 1)."""

    name = "compression"
    defaults = {"alpha": 0.75, "p": 1.0}
    limits = {"alpha": (0.05, 4.0), "p": (0.0, 1.0)}

    def sample(self, x, gen):
        a = self.params["alpha"]
        return {"c": _u(x.shape[0], min(a, 1.0), max(a, 1.0), gen, x.device)}

    def apply(self, x, params):
        return x * params["c"].view(-1, 1, 1).to(x.dtype)


class GaussianNoise(Op):
    """Add N(0, σ²) to every bin, σ ~ U(0, sigma_max) per view."""

    name = "noise"
    defaults = {"sigma_max": 0.01, "p": 1.0}
    limits = {"sigma_max": (0.0, 10.0), "p": (0.0, 1.0)}

    def sample(self, x, gen):
        sigma = _u(x.shape[0], 0.0, self.params["sigma_max"], gen, x.device)
        return {"sigma": sigma, "noise": torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)}

    def apply(self, x, params):
        return torch.addcmul(x, params["sigma"].view(-1, 1, 1).to(x.dtype), params["noise"])


class SpecAugment(Op):
    """m_f frequency and m_t time masks with widths ~U{0..W-1}, filled with the patch minimum."""

    name = "specaugment"
    defaults = {"freq_masks": 2, "freq_width": 20, "time_masks": 2, "time_width": 20, "p": 1.0}
    limits = {"freq_masks": (0, 10), "freq_width": (1, 96), "time_masks": (0, 10), "time_width": (1, 1000),
              "p": (0.0, 1.0)}

    def sample(self, x, gen):
        b, t, f = x.shape
        q, dev = self.params, x.device

        def masks(count: int, width: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            w = _ints(b * count, 0, min(width, size) - 1, gen, dev).view(b, count)
            start = randint_below(size - w + 1, gen)
            return start, w

        fs, fw = masks(q["freq_masks"], q["freq_width"], f)
        ts, tw = masks(q["time_masks"], q["time_width"], t)
        return {"f_start": fs, "f_width": fw, "t_start": ts, "t_width": tw}

    def apply(self, x, params):
        b, t, f = x.shape

        def covered(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
            pos = torch.arange(size, device=x.device)[None, None, :]
            hit = (pos >= start[:, :, None]) & (pos < (start + width)[:, :, None])
            return hit.any(1)  # (B, size)

        mask = covered(params["t_start"], params["t_width"], t)[:, :, None] | \
            covered(params["f_start"], params["f_width"], f)[:, None, :]
        low = x.amin((1, 2), keepdim=True)
        return torch.where(mask, low, x)


class _Roll(Op):
    """Circular roll along one axis by U{1..max_shift} per sample."""

    axis: ClassVar[int]

    def sample(self, x, gen):
        return {"shift": _ints(x.shape[0], 1, self.params["max_shift"], gen, x.device)}

    def apply(self, x, params):
        size = x.shape[self.axis]
        src = (torch.arange(size, device=x.device)[None, :] - params["shift"][:, None]) % size
        shape = [x.shape[0], 1, 1]
        shape[self.axis] = size
        return x.gather(self.axis, src.view(shape).expand_as(x))


class TimeShift(_Roll):
    name = "time_shift"
    axis = 1
    defaults = {"max_shift": 29, "p": 1.0}
    limits = {"max_shift": (1, 1000), "p": (0.0, 1.0)}


class FreqShift(_Roll):
    name = "freq_shift"
    axis = 2
    defaults = {"max_shift": 9, "p": 1.0}
    limits = {"max_shift": (1, 95), "p": (0.0, 1.0)}


class TimeReversal(Op):
    """Flip the time axis (the reference applies it with p = 0.5)."""

    name = "time_reversal"
    defaults = {"p": 0.5}
    limits = {"p": (0.0, 1.0)}

    def sample(self, x, gen):
        return {}

    def apply(self, x, params):
        return x.flip(1)


class GaussianBlur(Op):
    """Separable 2-D Gaussian blur with an odd kernel size ~U{3, 5, .., kernel_max} and σ ~ U(σ_min, σ_max)
    per view (the reference's blur cannot run; these ranges blur by at most a few bins/frames)."""

    name = "blur"
    defaults = {"kernel_max": 7, "sigma_min": 0.1, "sigma_max": 2.0, "p": 1.0}
    limits = {"kernel_max": (3, 31), "sigma_min": (0.01, 20.0), "sigma_max": (0.01, 20.0), "p": (0.0, 1.0)}

    @classmethod
    def check(cls, params):
        _ordered(cls, "sigma_min", "sigma_max", params)
        if params["kernel_max"] % 2 == 0:
            raise ValueError(f"blur.kernel_max: got {params['kernel_max']}; must be odd")

    def sample(self, x, gen):
        b, q = x.shape[0], self.params
        half = _ints(b, 1, q["kernel_max"] // 2, gen, x.device)
        return {"half": half, "sigma": _u(b, q["sigma_min"], q["sigma_max"], gen, x.device)}

    def apply(self, x, params):
        b, t, f = x.shape
        r = self.params["kernel_max"] // 2
        taps = torch.arange(-r, r + 1, device=x.device).float()[None, :]
        k = torch.exp(-0.5 * (taps / params["sigma"][:, None]) ** 2) * (taps.abs() <= params["half"][:, None])
        k = (k / k.sum(1, keepdim=True)).to(x.dtype)  # (B, 2r+1)
        y = nn.functional.pad(x[None], (0, 0, r, r), mode="replicate")
        y = nn.functional.conv2d(y, k.view(b, 1, -1, 1), groups=b)
        y = nn.functional.pad(y, (r, r, 0, 0), mode="replicate")
        return nn.functional.conv2d(y, k.view(b, 1, 1, -1), groups=b)[0]


OPS: dict[str, type[Op]] = {cls.name: cls for cls in (RandomResizedCrop, Compression, GaussianNoise, SpecAugment,
                                                      TimeShift, FreqShift, TimeReversal, GaussianBlur)}


def _op_class(name: str) -> type[Op]:
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; allowed: {', '.join(OPS)}")
    return OPS[name]


def validate_op_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The op's full parameter set (defaults completed); ValueError naming the parameter otherwise."""
    return _op_class(name).validate(params)


def build_op(name: str, params: dict[str, Any] | None = None) -> Op:
    return _op_class(name)(**(params or {}))
