"""Batched spectrogram augmentations, looked up by name.

Each op acts on a whole (B, T, F) batch on its device. ``sample`` draws every per-sample random
parameter (and the per-sample apply mask, probability ``p``) from an explicit generator; ``apply``
is the deterministic transform given those parameters. Keeping the two apart lets the view pipeline
draw everything before rendering, and lets the tests feed the very same parameters to the
per-sample NumPy reference. The registry keys are the names used in configs, search spaces and
plots; the defaults are the reference's ranges (Fonseca et al. 2021, and ``edufonseca/uclser20``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field, ValidationError, create_model, model_validator
from torch import nn

from uclser_tune.validation import Float, Int, KeyedError, Schema, first_error
from uclser_tune.views.sampling import randint_below

Params = dict[str, torch.Tensor]  # every value has the batch as its first dimension
Spec = dict[str, tuple[Any, float, float]]  # parameter: (default, low, high), bounds inclusive


def _u(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _ints(n: int, lo: int, hi: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform integers in [lo, hi]."""
    return lo + randint_below(torch.full((n,), hi - lo + 1, device=device), gen)


def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = x[b, idx[b, i]]`` for x (B, R, C) and idx (B, R'): one row gather over the
    flattened batch, much faster on CPU than ``gather`` (it copies whole rows)."""
    b, r, c = x.shape
    flat = (idx + torch.arange(b, device=x.device)[:, None] * r).flatten()
    return x.reshape(b * r, c).index_select(0, flat).view(b, idx.shape[1], c)


class Op(nn.Module):
    """Base: parameter validation, the apply mask, and ``forward = where(mask, apply(x), x)``."""

    name: ClassVar[str]
    _model: ClassVar[type[Schema]]
    spec: ClassVar[Spec]  # the op's own parameters; every op also has p, the apply probability (default 1)

    def __init__(self, **params: Any):
        super().__init__()
        self.params = self.validate(params)

    @classmethod
    def validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The full parameter set (defaults completed, ints and floats as the spec's defaults are);
        ValueError naming ``<op>.<parameter>`` otherwise."""
        try:
            return cls.params_model().model_validate(params).model_dump()
        except ValidationError as err:
            raise ValueError(first_error(err, cls.params_model(), cls.name, prefix=True)) from None

    @classmethod
    def params_model(cls) -> type[Schema]:
        """The op's parameters as a pydantic model, built once from ``spec``: a key per parameter with
        its default and inclusive bounds, an integer where the default is one, and ``check`` after."""
        if "_model" not in cls.__dict__:
            spec = {"p": (1.0, 0.0, 1.0)} | cls.spec
            fields = {key: (Int if isinstance(default, int) else Float, Field(default, ge=lo, le=hi))
                      for key, (default, lo, hi) in spec.items()}

            def relations(model: Schema) -> Schema:
                cls.check(model.__dict__)
                return model

            validators = {"relations": model_validator(mode="after")(relations)}
            cls._model = create_model(f"{cls.__name__}Params", __base__=Schema, __validators__=validators, **fields)
        return cls._model

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """Relations between parameters (e.g. min ≤ max); raise KeyedError naming the parameter."""

    def draw(self, shape: torch.Size, gen: torch.Generator, device: torch.device) -> Params:
        """The op's own per-sample parameters for a batch of this (B, T, F) shape."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The transform of every sample (mask ignored); never modifies ``x``."""
        raise NotImplementedError

    def sample(self, shape: torch.Size, gen: torch.Generator, device: torch.device) -> Params:
        """Everything random about a batch of this shape: ``draw`` plus the apply mask ``apply``."""
        params = self.draw(shape, gen, device)
        params["apply"] = torch.rand(shape[0], generator=gen, device=device) < self.params["p"]
        return params

    def masked(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        y = self.apply(x, params)
        return y if self.params["p"] >= 1 else torch.where(params["apply"].view(-1, 1, 1), y, x)

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.masked(x, self.sample(x.shape, gen, x.device))


def _ordered(cls: type[Op], low: str, high: str, params: dict[str, Any]) -> None:
    if params[low] > params[high]:
        raise KeyedError(low, f"got {params[low]}; must be <= {cls.name}.{high} ({params[high]})")


class RandomResizedCrop(Op):
    """Crop a random area/aspect region and resize it back bilinearly (the reference's
    ``RandomResizedCrop_diy``: torchvision's sampling on a PIL image of width = mel bins).

    Area fraction ~ U(scale_min, scale_max), aspect (mel/time) log-uniform in (ratio_min, ratio_max),
    the first of ``tries`` draws that fits, else the whole patch. All tries of all samples are drawn
    at once. The resize is PIL's bilinear upscaling (half-pixel centres, taps clamped to the crop),
    done separably: a batched row gather and lerp along time, then a gather and lerp along mel.
    """

    name = "rrc"
    spec: ClassVar[Spec] = {"scale_min": (0.8, 0.01, 1.0), "scale_max": (1.0, 0.01, 1.0),
                            "ratio_min": (0.75, 0.1, 10.0), "ratio_max": (4 / 3, 0.1, 10.0),
                            "tries": (10, 1, 100)}

    @classmethod
    def check(cls, params):
        _ordered(cls, "scale_min", "scale_max", params)
        _ordered(cls, "ratio_min", "ratio_max", params)

    def draw(self, shape, gen, device):
        b, t, f = shape
        q, tries = self.params, self.params["tries"]
        area = t * f * _u(b * tries, q["scale_min"], q["scale_max"], gen, device).view(b, tries)
        log_ratio = _u(b * tries, math.log(q["ratio_min"]), math.log(q["ratio_max"]), gen, device)
        ratio = torch.exp(log_ratio).view(b, tries)
        w = torch.round(torch.sqrt(area * ratio)).long()  # mel bins
        h = torch.round(torch.sqrt(area / ratio)).long()  # frames
        fits = (w <= f) & (h <= t)
        first = fits.long().argmax(1, keepdim=True)  # index of the first fitting try (0 if none fits)
        found = fits.any(1)
        w = torch.where(found, w.gather(1, first)[:, 0], f)
        h = torch.where(found, h.gather(1, first)[:, 0], t)
        top, left = randint_below(t - h + 1, gen), randint_below(f - w + 1, gen)
        return {"top": top, "left": left, "height": h, "width": w}

    def apply(self, x, params):
        b, t, f = x.shape
        y0, y1, wy = _bilinear_axis(params["top"], params["height"], t)
        x0, x1, wx = _bilinear_axis(params["left"], params["width"], f)
        rows = take_rows(x, y0)
        rows.lerp_(take_rows(x, y1), wy[:, :, None].to(x.dtype))
        out = rows.gather(2, x0[:, None, :].expand(b, t, f))
        return out.lerp_(rows.gather(2, x1[:, None, :].expand(b, t, f)), wx[:, None, :].to(x.dtype))


def _bilinear_axis(start: torch.Tensor, size: torch.Tensor, out: int) -> tuple[torch.Tensor, ...]:
    """Source indices (i0, i1) and weights of i1 along one axis for upscaling each sample's crop
    [start, start+size) to ``out`` samples: half-pixel centres, taps clamped to the crop."""
    pos = torch.arange(out, device=size.device, dtype=torch.float64)[None, :]
    src = ((pos + 0.5) * (size[:, None].double() / out) - 0.5).clamp(min=0)  # float64 like PIL's coefficients
    i0 = torch.minimum(src.floor().long(), size[:, None] - 1)
    i1 = torch.minimum(i0 + 1, size[:, None] - 1)
    return start[:, None] + i0, start[:, None] + i1, (src - i0).float()


class Compression(Op):
    """x ← c·x on raw log10 values: c ~ U(α, 1) compresses (α < 1), c ~ U(1, α) expands (α > 1)."""

    name = "compression"
    spec: ClassVar[Spec] = {"alpha": (0.75, 0.05, 4.0)}

    def draw(self, shape, gen, device):
        a = self.params["alpha"]
        return {"c": _u(shape[0], min(a, 1.0), max(a, 1.0), gen, device)}

    def apply(self, x, params):
        return x * params["c"].view(-1, 1, 1).to(x.dtype)


class GaussianNoise(Op):
    """Add N(0, σ²) to every bin, σ ~ U(0, sigma_max) per view."""

    name = "noise"
    spec: ClassVar[Spec] = {"sigma_max": (0.01, 0.0, 10.0)}

    def draw(self, shape, gen, device):
        sigma = _u(shape[0], 0.0, self.params["sigma_max"], gen, device)
        return {"sigma": sigma, "noise": torch.randn(shape, generator=gen, device=device)}

    def apply(self, x, params):
        return torch.addcmul(x, params["noise"].to(x.dtype), params["sigma"].view(-1, 1, 1).to(x.dtype))


class SpecAugment(Op):
    """m_f frequency and m_t time masks of widths ~U{0..W-1} placed uniformly, filled with the patch
    minimum (the reference's ``mask_val='min'``; its masks never lower the minimum, so one value)."""

    name = "specaugment"
    spec: ClassVar[Spec] = {"freq_masks": (2, 0, 10), "freq_width": (20, 1, 96), "time_masks": (2, 0, 10),
                            "time_width": (20, 1, 1000)}

    def draw(self, shape, gen, device):
        b, t, f = shape
        q = self.params

        def masks(count: int, width: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            w = _ints(b * count, 0, min(width, size) - 1, gen, device).view(b, count)
            return randint_below(size - w + 1, gen), w

        fs, fw = masks(q["freq_masks"], q["freq_width"], f)
        ts, tw = masks(q["time_masks"], q["time_width"], t)
        return {"f_start": fs, "f_width": fw, "t_start": ts, "t_width": tw}

    def apply(self, x, params):
        _, t, f = x.shape

        def covered(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
            pos = torch.arange(size, device=x.device)[None, None, :]
            return ((pos >= start[:, :, None]) & (pos < (start + width)[:, :, None])).any(1)  # (B, size)

        hit = covered(params["t_start"], params["t_width"], t)[:, :, None] | \
            covered(params["f_start"], params["f_width"], f)[:, None, :]
        return torch.where(hit, x.amin((1, 2), keepdim=True), x)


class _Roll(Op):
    """Circular roll along one axis by U{1..max_shift} per sample (later content wraps to the start)."""

    axis: ClassVar[int]

    def draw(self, shape, gen, device):
        return {"shift": _ints(shape[0], 1, self.params["max_shift"], gen, device)}

    def apply(self, x, params):
        size = x.shape[self.axis]
        src = (torch.arange(size, device=x.device)[None, :] - params["shift"][:, None]) % size
        if self.axis == 1:
            return take_rows(x, src)
        return x.gather(2, src[:, None, :].expand_as(x))


class TimeShift(_Roll):
    name = "time_shift"
    axis = 1
    spec: ClassVar[Spec] = {"max_shift": (29, 1, 1000)}


class FreqShift(_Roll):
    name = "freq_shift"
    axis = 2
    spec: ClassVar[Spec] = {"max_shift": (9, 1, 95)}


class TimeReversal(Op):
    """Flip the time axis (the reference applies it with p = 0.5)."""

    name = "time_reversal"
    spec: ClassVar[Spec] = {"p": (0.5, 0.0, 1.0)}

    def draw(self, shape, gen, device):
        return {}

    def apply(self, x, params):
        return x.flip(1)


class GaussianBlur(Op):
    """Separable Gaussian blur, odd kernel sizes in {1, 3, .., kernel_max} drawn per axis and σ ~
    U(sigma_min, sigma_max) shared by both axes, per view; borders reflected (cv2's default), as the
    reference's ``RandomGaussianBlur`` meant to do (it cannot run). One grouped convolution per
    axis covers the whole batch: every sample's kernel is zero beyond its own half-width.
    """

    name = "blur"
    spec: ClassVar[Spec] = {"kernel_max": (7, 3, 31), "sigma_min": (0.1, 0.01, 20.0),
                            "sigma_max": (2.0, 0.01, 20.0)}

    @classmethod
    def check(cls, params):
        _ordered(cls, "sigma_min", "sigma_max", params)
        if params["kernel_max"] % 2 == 0:
            raise KeyedError("kernel_max", f"got {params['kernel_max']}; must be odd")

    def draw(self, shape, gen, device):
        b, q = shape[0], self.params
        half = _ints(2 * b, 0, q["kernel_max"] // 2, gen, device).view(b, 2)  # (time, mel) half-widths
        return {"half": half, "sigma": _u(b, q["sigma_min"], q["sigma_max"], gen, device)}

    def apply(self, x, params):
        b, t, f = x.shape
        r = min(self.params["kernel_max"] // 2, t - 1, f - 1)  # reflection needs r < the axis length
        taps = torch.arange(-r, r + 1, device=x.device).float()
        k = torch.exp(-0.5 * (taps / params["sigma"][:, None, None]) ** 2) * \
            (taps.abs() <= params["half"][:, :, None])  # (B, 2, 2r+1)
        k = (k / k.sum(2, keepdim=True)).to(x.dtype)
        y = nn.functional.pad(x[None], (0, 0, r, r), mode="reflect")
        y = nn.functional.conv2d(y, k[:, 0].reshape(b, 1, -1, 1), groups=b)
        y = nn.functional.pad(y, (r, r, 0, 0), mode="reflect")
        return nn.functional.conv2d(y, k[:, 1].reshape(b, 1, 1, -1), groups=b)[0]


OPS: dict[str, type[Op]] = {cls.name: cls for cls in (RandomResizedCrop, Compression, GaussianNoise,
                                                      SpecAugment, TimeShift, FreqShift, TimeReversal,
                                                      GaussianBlur)}


def _op_class(name: str) -> type[Op]:
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; allowed: {', '.join(OPS)}")
    return OPS[name]


def validate_op_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The op's full parameter set (defaults completed); ValueError naming the parameter otherwise."""
    return _op_class(name).validate(params)


def build_op(name: str, params: dict[str, Any] | None = None) -> Op:
    return _op_class(name)(**(params or {}))
