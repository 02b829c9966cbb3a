"""A per-sample NumPy transcription of the reference's default view chain (edufonseca/uclser20).

One clip at a time, one op at a time, in float32, as the reference's data loader does it
(``FSDnoisy18k.__getitem__``, then ``RandomResizedCrop_diy``, ``Compander``, ``GaussNoise``,
``Normalize``): the obviously-correct reference for the tests and the baseline of the benchmark.
Drawing and applying are kept apart so that the tests can render the *same* random parameters
that the batched pipeline drew, and ``benchmarks/views.py`` can time the reference's own
per-sample draws (NumPy's legacy generator and Python's ``random``, as the reference uses them).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from uclser_tune.views.pipeline import ViewParams

T, F = 101, 96


@dataclass
class RefView:
    """Everything random about one view of one clip."""

    start: int
    bg_clip: int
    bg_start: int
    lam: float  # shared by the clip's two views
    crop: tuple[int, int, int, int]  # top, left, height, width
    c: float  # compression factor
    noise: np.ndarray  # (T, F) float64, already scaled by σ


def mix_energy(patch: np.ndarray, back: np.ndarray, lam: float) -> np.ndarray:
    """The reference's mix-back with energy adjustment (``mix_energy``)."""
    p, b = 10**patch, 10**back
    return np.log10(p * (1 - lam) + b * (lam * p.sum() / b.sum()))


def mix_plain(patch: np.ndarray, back: np.ndarray, lam: float) -> np.ndarray:
    """mix-back without energy adjustment (the paper's ablation)."""
    return np.log10((1 - lam) * 10**patch + lam * 10**back)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's bilinear upscaling of a float image: half-pixel centres, taps outside the image
    dropped (= source coordinates clamped to the image)."""

    def axis(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * (size / out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), size - 1)
        return i0, np.minimum(i0 + 1, size - 1), (src - i0).astype(img.dtype)

    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    rows = img[y0] * (1 - wy)[:, None] + img[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def rrc_params(rnd: random.Random, shape: tuple[int, int] = (T, F), scale: tuple[float, float] = (0.8, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``RandomResizedCrop_diy.get_params`` on a (time, mel) array seen as a PIL image of width =
    mel bins and height = frames: (top, left, height, width); the whole patch after 10 misses."""
    t, f = shape
    for _ in range(10):
        area = rnd.uniform(*scale) * t * f
        aspect = math.exp(rnd.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(area * aspect))
        h = round(math.sqrt(area / aspect))
        if w <= f and h <= t:
            return rnd.randint(0, t - h), rnd.randint(0, f - w), h, w
    return 0, 0, t, f  # the reference's "central crop" is the whole patch when 3/4 <= 96/101 <= 4/3


def draw_views(lengths: np.ndarray, index: int, rs: np.random.RandomState, rnd: random.Random,
               patch: int = T, alpha: float = 0.05, comp_alpha: float = 0.75,
               sigma_max: float = 0.01) -> tuple[RefView, RefView]:
    """The reference's draws for the two views of clip ``index``, in its order."""
    room = int(lengths[index]) - patch
    # randint(0, room) leaves out the last valid start, as the reference does (the pipeline does not)
    starts = [int(rs.randint(0, room)) if room > 0 else 0 for _ in range(2)]
    bgs = []
    while len(bgs) < 2:  # two distinct background clips, neither the clip itself
        j = int(rs.randint(0, len(lengths)))
        if j != index and j not in bgs:
            bgs.append(j)
    bg_starts = [int(rs.randint(0, lengths[j] - patch)) if lengths[j] > patch else 0 for j in bgs]
    lam = float(rs.uniform(0, alpha))
    views = []
    for s, j, sb in zip(starts, bgs, bg_starts):
        crop = rrc_params(rnd, (patch, F))
        c = float(rs.uniform(comp_alpha, 1.0))
        noise = rs.normal(0, rs.uniform(0, sigma_max), (patch, F))
        views.append(RefView(s, j, sb, lam, crop, c, noise))
    return views[0], views[1]


def view_of(params: ViewParams, row: int) -> RefView:
    """The reference's description of view ``row`` of the batched pipeline's own draws
    (``ViewPipeline.sample`` of the default chain: mix-back, RRC, compression, noise), so that the
    reference can render exactly what the pipeline rendered."""
    rrc, comp, noise = params.ops
    return RefView(
        start=int(params.starts[row]), bg_clip=int(params.bg_clips[row]), bg_start=int(params.bg_starts[row]),
        lam=float(params.lam[row]), crop=tuple(int(rrc[k][row]) for k in ("top", "left", "height", "width")),
        c=float(comp["c"][row]), noise=float(noise["sigma"][row]) * noise["noise"][row].double().cpu().numpy())


def render_view(frames: np.ndarray, offsets: np.ndarray, index: int, v: RefView, mean: float, std: float,
                patch: int = T, energy_adjust: bool = True) -> np.ndarray:
    """One view: slice, mix-back, RRC, compression, noise, normalise (float32 like the reference)."""
    x = frames[offsets[index] + v.start : offsets[index] + v.start + patch].astype(np.float32)
    b = frames[offsets[v.bg_clip] + v.bg_start : offsets[v.bg_clip] + v.bg_start + patch].astype(np.float32)
    x = (mix_energy if energy_adjust else mix_plain)(x, b, np.float32(v.lam))
    top, left, h, w = v.crop
    x = resize_bilinear(x[top : top + h, left : left + w], patch, F)
    x = x * np.float32(v.c)
    x = (x + v.noise).astype(np.float32)
    return (x - np.float32(mean)) / np.float32(std)


def reference_views(frames: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
                    rs: np.random.RandomState, rnd: random.Random, mean: float, std: float,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Both views, (B, 1, T, F) each, of the clips in ``idx``, one clip at a time (the baseline)."""
    out: tuple[list, list] = ([], [])
    for i in idx:
        for views, v in zip(out, draw_views(lengths, int(i), rs, rnd)):
            views.append(render_view(frames, offsets, int(i), v, mean, std))
    return np.stack(out[0])[:, None], np.stack(out[1])[:, None]
