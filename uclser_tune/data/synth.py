"""The embedded synthetic data set: procedural sound events in the FSDnoisy18k layout.

FSDnoisy18k cannot be downloaded everywhere and is 18 GB; this generator lets a user see the whole
system work first. It writes 20 classes of sound events with real within-class variation (pitch,
timbre, envelope, event rate) and clip lengths shaped like FSDnoisy18k's (log-normal around 3 s, from
0.3 s up to the size's longest clip, few of 1 s or less), drawn alike for every class (length is no
label shortcut).

Version 3 makes the two things the paper's ablations rest on explicit:
- within-clip variation: two patches of one clip are different instances of one source, not copies.
  Each clip draws a source (every parameter of its class's generator: pitch, timbre, decay, rate),
  and every one-shot event, and every 0.5-2 s segment of a texture (cross-faded), draws its own
  parameters around that source (a jitter of 10 % of each parameter's range) with fresh noise, level
  and timing. Different clips of a class are different sources, as different dogs bark differently.
- per-clip nuisances that vary between clips of one class: channel colouration, background noise
  (its level drifting over the clip) and gain (with a slow drift). Two patches of one clip share the
  channel and the background's colour, so a contrastive model can match views by the nuisance instead
  of the sound event: the shortcut mix-back (a background from another clip) and the augmentations
  are there to break. The drifts keep the background and the level from being a better cue between
  two distant patches of a clip than the source itself.

Deterministic: every clip draws from its own ``numpy`` generator seeded by (seed, clip index), and
WAVs carry no timestamps, so the same seed and size give byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

SR = 22_050
GENERATOR_VERSION = 3
LABEL_NOISE = 0.3  # share of noisy-split rows whose label is another class, chosen uniformly
NOISY_SMALL = 0.05  # share of noisy rows flagged noisy_small=1 (FSDnoisy18k has such a subset)

# per class: noisy-split clips, clean clips (manually_verified=1), test clips; max clip length (s)
SIZES = {
    "tiny": (10, 3, 3, 3.0),
    "small": (100, 12, 10, 10.0),
    "full": (791, 89, 47, 30.0),
}
MIN_SECONDS = 0.3
MEDIAN_SECONDS, LOG_SD = 3.0, 0.75  # log-normal clip lengths: about 7 % of clips are 1 s or shorter
SEGMENT_SECONDS = (0.5, 2.0)  # a texture's segments, each with its own parameters
FADE_SECONDS = 0.05
JITTER = 0.1  # sd of an event's or segment's parameter around its clip's source, in units of the range
NOISE_SIZE = 16  # a uniform draw of more values than this is waveform noise, not a parameter


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / decay)


def _tone(n: int, f0: float, partials: np.ndarray, amps: np.ndarray, decays: np.ndarray | None = None) -> np.ndarray:
    t = np.arange(n)[:, None] / SR
    ph = 2 * np.pi * f0 * partials[None, :] * t
    damp = np.exp(-t / decays[None, :]) if decays is not None else 1.0
    return (amps[None, :] * np.sin(ph) * damp).sum(1)


def _noise(rng: np.random.Generator, n: int, lowpass: float = 0.0) -> np.ndarray:
    x = rng.standard_normal(n)
    return lfilter([1 - lowpass], [1, -lowpass], x) if lowpass else x


def _sweep(n: int, f_start: float, f_end: float) -> np.ndarray:
    f = np.geomspace(f_start, f_end, n)
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


class SourceDraws:
    """The random draws of one event or texture segment: parameters near the clip's source, fresh noise.

    The generators below draw their parameters with ``uniform``. Here each such draw is the source's
    value (the same sequence for every event of the clip: a generator re-seeded with the clip's source
    seed) plus a Gaussian jitter of ``JITTER`` of the range, clipped to it. Waveform noise (``random``,
    ``standard_normal``, long ``uniform`` draws) comes fresh from the clip's own generator and does not
    consume source draws, so the source sequence stays aligned across events of different lengths."""

    def __init__(self, source_seed: int, fresh: np.random.Generator) -> None:
        self._source = np.random.default_rng(source_seed)
        self._fresh = fresh

    def uniform(self, low: float = 0.0, high: float = 1.0, size: int | None = None):
        if size is not None and size > NOISE_SIZE:
            return self._fresh.uniform(low, high, size)
        u = self._source.random(size) + self._fresh.normal(0.0, JITTER, size)
        return low + (high - low) * np.clip(u, 0.0, 1.0)

    def random(self, size: int | None = None):
        return self._fresh.random(size)

    def standard_normal(self, size: int | None = None):
        return self._fresh.standard_normal(size)


# --- one-shot events: (rng) -> short waveform; placed repeatedly in a clip -----------------------


def pluck(r):
    n = int(SR * r.uniform(0.3, 1.2))
    k = np.arange(1, 9)
    return _tone(n, r.uniform(110, 440), k, r.uniform(0.3, 1, 8) / k, r.uniform(0.1, 0.6) / k**0.7)


def bell(r):
    n = int(SR * r.uniform(0.6, 2.0))
    ratios = np.array([1.0, 2.76, 5.40, 8.93]) * r.uniform(0.97, 1.03, 4)
    return _tone(n, r.uniform(300, 900), ratios, r.uniform(0.3, 1, 4), r.uniform(0.3, 1.0) / ratios**0.5)


def chirp_up(r):
    n = int(SR * r.uniform(0.15, 0.6))
    return _sweep(n, r.uniform(200, 600), r.uniform(1500, 4000)) * _env(n, 0.01, n / SR / 2)


def chirp_down(r):
    n = int(SR * r.uniform(0.15, 0.6))
    return _sweep(n, r.uniform(1500, 4000), r.uniform(200, 600)) * _env(n, 0.01, n / SR / 2)


def kick(r):
    n = int(SR * r.uniform(0.2, 0.5))
    return _sweep(n, r.uniform(120, 200), r.uniform(40, 60)) * _env(n, 0.002, r.uniform(0.05, 0.15))


def snare(r):
    n = int(SR * r.uniform(0.15, 0.35))
    body = _tone(n, r.uniform(160, 260), np.array([1.0, 1.5]), np.array([0.5, 0.3]))
    return (body + _noise(r, n, r.uniform(0.0, 0.5))) * _env(n, 0.001, r.uniform(0.04, 0.1))


def glass(r):
    n = int(SR * r.uniform(0.1, 0.4))
    ratios = np.array([1.0, 1.59, 2.14, 2.65])
    return _tone(n, r.uniform(2500, 5000), ratios, r.uniform(0.3, 1, 4), np.full(4, r.uniform(0.03, 0.12)))


def knock(r):
    n = int(SR * r.uniform(0.05, 0.15))
    return _tone(n, r.uniform(250, 700), np.array([1.0, 2.3]), np.array([1.0, 0.4]), np.full(2, 0.02)) * 2


def thump(r):
    n = int(SR * r.uniform(0.1, 0.25))
    return _noise(r, n, r.uniform(0.9, 0.97)) * _env(n, 0.005, r.uniform(0.03, 0.07)) * 6


def droplet(r):
    n = int(SR * r.uniform(0.01, 0.04))
    return _sweep(n, r.uniform(1500, 5000), r.uniform(800, 2000)) * _env(n, 0.001, 0.008)


def click(r):
    n = int(SR * 0.004)
    return _noise(r, n) * _env(n, 0.0002, 0.001)


# --- textures: (rng, n samples) -> waveform filling the clip --------------------------------------


def engine(r, n):
    f0 = r.uniform(30, 90)
    k = np.arange(1, 13)
    am = 1 + 0.5 * np.sin(2 * np.pi * r.uniform(4, 15) * np.arange(n) / SR)
    return _tone(n, f0, k, 1 / k**r.uniform(0.5, 1.2)) * am


def wind(r, n):
    slow = lfilter([0.0005], [1, -0.9995], r.standard_normal(n)) * 40
    return _noise(r, n, r.uniform(0.9, 0.98)) * (1 + np.clip(slow, -0.9, 3))


def hum(r, n):
    k = np.arange(1, 6)
    return _tone(n, r.uniform(50, 130), k, r.uniform(0.2, 1, 5) / k)


def whistle(r, n):
    t = np.arange(n) / SR
    f = r.uniform(800, 2500) * (1 + r.uniform(0.005, 0.03) * np.sin(2 * np.pi * r.uniform(4, 7) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def siren(r, n):
    t = np.arange(n) / SR
    lo, hi = r.uniform(400, 700), r.uniform(900, 1500)
    f = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * r.uniform(0.3, 1.5) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def fizz(r, n):
    x = _noise(r, n)
    hp = x - lfilter([1 - 0.6], [1, -0.6], x)
    gate = np.repeat(r.uniform(0.2, 1.0, n // 2205 + 1), 2205)[:n]
    return hp * gate


def trill(r, n):
    t = np.arange(n) / SR
    rate = r.uniform(6, 14)
    f1 = r.uniform(500, 1200)
    f = np.where(np.sin(2 * np.pi * rate * t) > 0, f1, f1 * r.uniform(1.12, 1.35))
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def squeak(r, n):
    t = np.arange(n) / SR
    f = r.uniform(1500, 3000) + r.uniform(300, 900) * np.sin(2 * np.pi * r.uniform(2, 6) * t)
    return np.sin(2 * np.pi * np.cumsum(f) / SR) * (0.6 + 0.4 * np.abs(np.sin(2 * np.pi * r.uniform(1, 3) * t)))


def tearing(r, n):
    rate = r.uniform(200, 800)
    crackle = (r.random(n) < rate / SR) * r.uniform(-1, 1, n)
    return lfilter([1], [1, -r.uniform(0.3, 0.8)], crackle) * 8 + 0.1 * _noise(r, n, 0.5)


EVENTS: dict[str, Callable] = {
    "pluck": pluck, "bell": bell, "chirp_up": chirp_up, "chirp_down": chirp_down, "kick": kick,
    "snare": snare, "glass": glass, "knock": knock, "footsteps": thump, "rain": droplet, "clicks": click,
}
TEXTURES: dict[str, Callable] = {
    "engine": engine, "wind": wind, "hum": hum, "whistle": whistle, "siren": siren,
    "fizz": fizz, "trill": trill, "squeak": squeak, "tearing": tearing,
}
# events per second: one-shots (1-2.5 per s, so that most 1 s patches hold one) vs dense trains (rain,
# clicks) vs regular steps
RATES = {"rain": (20, 60), "clicks": (5, 25), "footsteps": (1.5, 2.5), "knock": (2, 6)}
CLASSES = sorted([*EVENTS, *TEXTURES])


def _events(r: np.random.Generator, name: str, n: int, source: int) -> np.ndarray:
    """Events of one source at random (or, for footsteps, near-regular) times, so patches of a clip
    differ."""
    out = np.zeros(n)
    lo, hi = RATES.get(name, (1.0, 2.5))
    if name == "footsteps":  # one step per period over the whole clip, with a little timing jitter
        period = SR / r.uniform(lo, hi)
        grid = np.arange(r.uniform(0, period), n, period)
        starts = (grid + r.normal(0, 0.03 * SR, len(grid))).clip(0, n - 1).astype(int) if len(grid) else [0]
    else:
        count = max(1, r.poisson(r.uniform(lo, hi) * n / SR))
        starts = np.sort(r.integers(0, max(1, n - SR // 10), count))
    for s in starts:
        e = EVENTS[name](SourceDraws(source, r)) * r.uniform(0.5, 1.0)
        m = min(len(e), n - s)
        out[s : s + m] += e[:m]
    return out


def _texture(r: np.random.Generator, name: str, n: int, source: int) -> np.ndarray:
    """A texture as a chain of segments, each with its own parameters around the source (cross-faded),
    and slow level changes, so that two patches of a long clip are different instances of the source."""
    fade = int(FADE_SECONDS * SR)
    x, at = np.zeros(n), 0
    while at < n:
        m = min(n - at, int(r.uniform(*SEGMENT_SECONDS) * SR)) + fade
        seg = TEXTURES[name](SourceDraws(source, r), m)
        seg = seg / (np.sqrt(np.mean(seg**2)) + 1e-9) * np.minimum(1.0, np.arange(m)[::-1] / fade if at + m < n else 1.0)
        if at:
            seg[:fade] *= np.arange(fade) / fade
        x[at : at + m] += seg[: n - at]
        at += m - fade
    knots = max(2, int(n / SR) + 2)
    level = np.interp(np.arange(n), np.linspace(0, n, knots), r.uniform(0.4, 1.0, knots))
    return x * level


def render(label: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One clip: one source's sound events, then the per-clip nuisances (colouration, background, gain)."""
    n = int(seconds * SR)
    source = int(rng.integers(2**32))
    x = _events(rng, label, n, source) if label in EVENTS else _texture(rng, label, n, source)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-9)
    # channel colouration: a random stable biquad-like filter (mic/room), fixed for the clip
    b = [1.0, rng.uniform(-0.9, 0.9), rng.uniform(-0.5, 0.5)]
    a = [1.0, rng.uniform(-0.6, 0.6)]
    x = lfilter(b, a, x)
    x /= np.sqrt(np.mean(x**2)) + 1e-9
    # coloured background at a random SNR whose level drifts over the clip (knots every 0.5 s), so it is
    # a weaker cue between two distant patches of a clip than the source itself
    bg = _noise(rng, n, rng.uniform(0.0, 0.95))
    knots = max(2, int(2 * n / SR) + 2)
    bg *= np.interp(np.arange(n), np.linspace(0, n, knots), rng.uniform(0.1, 1.0, knots))
    bg /= np.sqrt(np.mean(bg**2)) + 1e-9
    x = x + bg * 10 ** (-rng.uniform(5, 30) / 20)
    # gain: a clip level of -1 to -20 dB with a slow drift of up to 6 dB (knots every second)
    knots = max(2, int(n / SR) + 2)
    x = x * 10 ** (np.interp(np.arange(n), np.linspace(0, n, knots), rng.uniform(-6, 0, knots)) / 20)
    x = x / (np.abs(x).max() + 1e-9) * 10 ** (-rng.uniform(1, 20) / 20)
    return x.astype(np.float32)


def _plan(seed: int, size: str) -> list[dict]:
    """Every clip's split, true class, written label, duration and file id, from one seeded stream."""
    n_noisy, n_clean, n_test, max_s = SIZES[size]
    rng = np.random.default_rng([seed, 0xC1A55])
    rows = []
    for split, per_class in (("noisy", n_noisy), ("clean", n_clean), ("test", n_test)):
        for cls in range(len(CLASSES)):
            rows += [{"split": split, "cls": cls} for _ in range(per_class)]
    ids = rng.permutation(len(rows)) + 1000
    for i, row in enumerate(rows):
        row["fname"] = f"{ids[i]}.wav"
        row["seconds"] = float(np.clip(np.exp(rng.normal(np.log(MEDIAN_SECONDS), LOG_SD)), MIN_SECONDS, max_s))
        label = row["cls"]
        if row["split"] == "noisy" and rng.random() < LABEL_NOISE:
            label = (label + rng.integers(1, len(CLASSES))) % len(CLASSES)
        row["label"] = CLASSES[label]
        row["noisy_small"] = int(row["split"] == "noisy" and rng.random() < NOISY_SMALL)
        row["index"] = i
    return rows


def _write_clip(args: tuple[Path, int, dict]) -> None:
    folder, seed, row = args
    audio = render(CLASSES[row["cls"]], np.random.default_rng([seed, row["index"]]), row["seconds"])
    sf.write(folder / row["fname"], audio, SR, subtype="PCM_16", format="WAV")


def generate(out_dir: str | Path, seed: int = 0, size: str = "small", workers: int | None = None,
             progress: bool = True) -> dict:
    """Write the data set into ``out_dir`` (its four FSDnoisy18k folders are replaced) and return a summary."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
    out = Path(out_dir)
    started = time.perf_counter()
    folders = {k: out / f"FSDnoisy18k.{k}" for k in ("audio_train", "audio_test", "meta", "doc")}
    for f in folders.values():
        shutil.rmtree(f, ignore_errors=True)
        f.mkdir(parents=True)
    rows = _plan(seed, size)
    jobs = [(folders["audio_test" if r["split"] == "test" else "audio_train"], seed, r) for r in rows]
    workers = workers or min(2, os.cpu_count() or 1)
    bar = _bar(len(jobs), progress)
    with ProcessPoolExecutor(workers) as pool:
        for _ in pool.map(_write_clip, jobs, chunksize=16):
            bar.update(1)
    bar.close()

    by_id = sorted(rows, key=lambda r: int(r["fname"][:-4]))
    with open(folders["meta"] / "train.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "label", "aso_id", "manually_verified", "noisy_small"])
        for r in by_id:
            if r["split"] != "test":
                w.writerow([r["fname"], r["label"], f"/m/synth_{r['label']}", int(r["split"] == "clean"),
                            r["noisy_small"]])
    with open(folders["meta"] / "test.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "label", "aso_id"])
        for r in by_id:
            if r["split"] == "test":
                w.writerow([r["fname"], r["label"], f"/m/synth_{r['label']}"])
    noisy = [r for r in rows if r["split"] == "noisy"]
    summary = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "size": size, "sample_rate": SR,
        "classes": CLASSES,
        "clips": {s: sum(r["split"] == s for r in rows) for s in ("noisy", "clean", "test")},
        "label_noise_rate_target": LABEL_NOISE,
        "label_noise_rate_realised": float(np.mean([r["label"] != CLASSES[r["cls"]] for r in noisy])),
        "seconds_total": float(sum(r["seconds"] for r in rows)),
    }
    (folders["doc"] / "synth_info.json").write_text(json.dumps(summary, indent=1) + "\n")
    summary["generation_seconds"] = time.perf_counter() - started
    return summary


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    if not enabled:
        class _Quiet:
            def update(self, n): ...
            def close(self): ...
        return _Quiet()
    return tqdm(total=total, unit="clip", desc="synth", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m uclser_tune.data synth",
                                description="Write the synthetic sound-event data set in the FSDnoisy18k layout.")
    p.add_argument("--out", required=True, type=Path, help="output folder (its FSDnoisy18k.* folders are replaced)")
    p.add_argument("--seed", type=int, default=0, help="same seed and size give byte-identical files")
    p.add_argument("--size", choices=list(SIZES), default="small",
                   help="tiny: CI smoke tests; small: CPU experiments; full: FSDnoisy18k-sized")
    a = p.parse_args(argv)
    s = generate(a.out, a.seed, a.size)
    print(f"wrote {sum(s['clips'].values())} clips ({s['clips']}) to {a.out} in {s['generation_seconds']:.1f} s; "
          f"label noise in the noisy split: {s['label_noise_rate_realised']:.3f}")
    return 0
