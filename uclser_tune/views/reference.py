"""A per-sample NumPy transcription of the reference's default view chain.

Slow on purpose: one clip at a time, one op at a time, as the reference's data loader does it on the
CPU. Tests use it as the obviously-correct reference for the batched ops (fed the same parameters),
and ``benchmarks/views.py`` as the baseline.
"""

from __future__ import annotations

import math

import numpy as np


def mixback(fg: np.ndarray, bg: np.ndarray, lam: float, energy_adjust: bool = True) -> np.ndarray:
    p, b = 10.0 ** fg.astype(np.float64), 10.0 ** bg.astype(np.float64)
    if energy_adjust:
        b = b * (p.sum() / b.sum())
    return np.log10((1 - lam) * p + lam * b)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with align_corners=False and source coordinates clamped to the image."""
    def axis(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), size - 1)
        i1 = np.minimum(i0 + 1, size - 1)
        return i0, i1, src - i0

    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    rows = img[y0] * (1 - wy)[:, None] + img[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def rrc(x: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return resize_bilinear(x[top : top + height, left : left + width], *x.shape)


def rrc_params(shape: tuple[int, int], rng: np.random.Generator, scale=(0.8, 1.0), ratio=(0.75, 4 / 3),
               tries: int = 10) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, height, width); whole patch after ``tries``."""
    t, f = shape
    for _ in range(tries):
        area = t * f * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(area * aspect)))
        h = int(round(math.sqrt(area / aspect)))
        if 0 < w <= f and 0 < h <= t:
            return int(rng.integers(0, t - h + 1)), int(rng.integers(0, f - w + 1)), h, w
    return 0, 0, t, f


def reference_views(frames: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
                    rng: np.random.Generator, mean: float, std: float, patch: int = 101, alpha: float = 0.05,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Both views of each clip in ``idx``: random patches, mix-back (energy-adjusted), RRC,
    compression U(0.75, 1), noise σ ~ U(0, 0.01), normalisation — one clip at a time."""
    n = len(lengths)
    out = ([], [])
    for i in idx:
        lam = rng.uniform(0, alpha)
        for view in out:
            s = rng.integers(0, lengths[i] - patch + 1)
            x = frames[offsets[i] + s : offsets[i] + s + patch].astype(np.float64)
            j = (i + 1 + rng.integers(0, n - 1)) % n
            sb = rng.integers(0, lengths[j] - patch + 1)
            x = mixback(x, frames[offsets[j] + sb : offsets[j] + sb + patch], lam)
            x = rrc(x, *rrc_params(x.shape, rng))
            x = x * rng.uniform(0.75, 1.0)
            x = x + rng.normal(0, rng.uniform(0, 0.01), x.shape)
            view.append(((x - mean) / std).astype(np.float32))
    return np.stack(out[0])[:, None], np.stack(out[1])[:, None]
