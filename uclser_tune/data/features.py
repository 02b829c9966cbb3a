"""Log-mel features exactly as the reference extractor computes them (edufonseca/uclser20).

Resample to 22,050 Hz; subtract the mean and divide by (max|y| + 0.005); tile clips of ≤ 1 s to
exactly 1 s; STFT of (y + 1.1e-8) with n_fft 2048, a 660-sample periodic Hamming window, hop 220,
centred with reflect padding; power; 96 Slaney mel bands 50-10,500 Hz without area normalisation;
log10(mel + 1.1e-8). Output (T, 96) float32 with T = 1 + floor(L / 220) ≥ 101.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from uclser_tune.data.params import EPS, FMAX, FMIN, HOP, N_FFT, N_MELS, SR, WIN

PARAMS = {"sr": SR, "n_fft": N_FFT, "win": WIN, "hop": HOP, "n_mels": N_MELS, "fmin": FMIN, "fmax": FMAX,
          "eps": EPS, "window": "hamming-periodic", "mel": "slaney-norm-none", "resampler": "soxr_hq",
          "normalise": "mean-maxabs+0.005", "min_seconds": 1.0}


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX, htk=False, norm=None)


def preprocess(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono, 22,050 Hz, centred and peak-scaled, at least 1 s (short clips tiled), float64."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:  # (n, channels) as soundfile returns it, or (channels, n) as librosa does
        y = y.mean(axis=0 if y.shape[0] < y.shape[1] else 1)
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq")
    y = y - y.mean()
    y = y / (np.abs(y).max() + 0.005)
    if len(y) <= SR:
        y = np.tile(y, SR // max(len(y), 1) + 1)[:SR]
    return y


def logmel(y: np.ndarray, sr: int) -> np.ndarray:
    """(T, 96) float32 log10 mel power of a waveform at any sample rate."""
    y = preprocess(y, sr)
    spec = librosa.stft(y + EPS, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hamming",
                        center=True, pad_mode="reflect")
    power = np.abs(spec) ** 2
    return np.log10(mel_basis() @ power + EPS).T.astype(np.float32)


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples, rate) of an audio file; raises on unreadable, empty or non-audio files."""
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError):
        y, sr = librosa.load(str(path), sr=None, mono=True)  # formats libsndfile cannot read
    if y.size == 0:
        raise ValueError("empty audio")
    if not np.all(np.isfinite(y)):
        raise ValueError("non-finite samples")
    return y, sr


def file_logmel(path: str | Path) -> np.ndarray:
    y, sr = load_audio(path)
    return logmel(y, sr)
