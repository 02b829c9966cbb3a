"""Embeddings of raw audio from a pre-trained encoder, in the HEAR API convention.

``load_model`` rebuilds the encoder (projection head dropped: downstream tasks use h, as in the paper) with
the feature normalisation it was trained with. Audio must already be at 22,050 Hz: no resampling is
done here. The log-mel front end is a batched torch transcription of
:func:`uclser_tune.data.features.logmel` (which needs librosa), so users need only torch; it runs in
float64 like the reference: max |Δ log10| about 5e-7 from it, where a float32 STFT drifts by up to
2e-4 on a sine sweep (measured).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from uclser_tune.data.params import EPS, FMAX, FMIN, HOP, N_FFT, N_MELS, SR, WIN
from uclser_tune.models import build_encoder
from uclser_tune.training import config_of, encoder_state_of, load_checkpoint

PATCH = 101  # frames per patch, as in training and evaluation
PATCH_HOP = 50  # frames between patch starts: 50 · 220 / 22,050 s ≈ 498.9 ms


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1000.0) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, linear)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (np.maximum(m, 15.0) - 15.0))
    return np.where(m >= 15.0, log, linear)


def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
                   fmax: float = FMAX) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float64 triangular filters, equally spaced on the Slaney mel scale,
    peak 1 (no area normalisation), as librosa.filters.mel(htk=False, norm=None) builds them."""
    fft_hz = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


def preprocess(audio: torch.Tensor) -> torch.Tensor:
    """(n, L') float64: each sound centred and divided by (max|y| + 0.005); sounds of ≤ 1 s tiled to
    exactly 1 s (all at once: a batch shares its length)."""
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise ValueError(f"audio must be (n_sounds, n_samples) with n_samples > 0; got {tuple(audio.shape)}")
    y = audio.to(torch.float64)
    y = y - y.mean(dim=1, keepdim=True)
    y = y / (y.abs().amax(dim=1, keepdim=True) + 0.005)
    n_samples = y.shape[1]
    if n_samples <= SR:
        y = y.repeat(1, SR // n_samples + 1)[:, :SR]
    return y


def logmel(audio: torch.Tensor) -> torch.Tensor:
    """(n, T, 96) float32 log10 mel power of (n, L) audio at 22,050 Hz, T = 1 + max(L, 22,050) // 220,
    computed on the audio's device."""
    y = preprocess(audio)
    window = torch.hamming_window(WIN, periodic=True, dtype=torch.float64, device=y.device)
    spec = torch.stft(y + EPS, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True,
                      pad_mode="reflect", return_complex=True)  # window centred in the frame, as librosa
    power = spec.real.square() + spec.imag.square()
    basis = torch.from_numpy(mel_filterbank()).to(y.device)
    return torch.log10(basis @ power + EPS).transpose(1, 2).float()


class EmbeddingModel(nn.Module):
    """A pre-trained encoder with the store statistics its input was normalised by; ``forward`` maps
    raw log-mel patches (B, 101, 96) to h (B, d)."""

    sample_rate = SR

    def __init__(self, encoder: nn.Module, mean: float, std: float):
        super().__init__()
        self.encoder = encoder
        self.mean = mean
        self.std = std
        self.scene_embedding_size = encoder.embed_dim
        self.timestamp_embedding_size = encoder.embed_dim

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.encoder(((patches - self.mean) / self.std).unsqueeze(1))


def load_model(checkpoint_path: str | Path, device: str | torch.device | None = None) -> EmbeddingModel:
    """The encoder of a pre-training checkpoint (a ``.pt`` file such as a run's ``best.pt``, or a run
    dir holding ``checkpoint.pt``) in eval mode, on ``device`` (CPU when None: HEAR harnesses move the
    model themselves)."""
    state = load_checkpoint(checkpoint_path)
    cfg = config_of(state)
    encoder = build_encoder(cfg.model.encoder, cfg.model.width)
    encoder.load_state_dict(encoder_state_of(state))
    model = EmbeddingModel(encoder, float(state["norm"]["mean"]), float(state["norm"]["std"]))
    return model.to(device or "cpu").eval()


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: EmbeddingModel,
                             batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """One h per 101-frame patch (≈ 1.01 s) with a hop of 50 frames = 50 · 220 / 22,050 s ≈ 498.9 ms,
    the evaluation patches of training; the tail that does not fill a patch is dropped.

    ``audio`` is (n_sounds, n_samples) at 22,050 Hz (not resampled here). Returns embeddings
    (n_sounds, n_frames, d) and each patch's centre in ms (n_sounds, n_frames), on the model's device.
    At most ``batch_size`` patches go through the encoder at a time, and the log-mel is computed for
    as many whole sounds as fill one such batch (at least one sound), which bounds the float64 STFT's
    memory.
    """
    device = next(model.parameters()).device
    n_sounds, n_samples = audio.shape
    n_frames = (1 + max(n_samples, SR) // HOP - PATCH) // PATCH_HOP + 1
    sounds_per_chunk = max(1, batch_size // n_frames)
    was_training = model.training
    model.eval()
    h = []
    try:
        for first in range(0, n_sounds, sounds_per_chunk):
            features = logmel(audio[first : first + sounds_per_chunk].to(device))
            patches = features.unfold(1, PATCH, PATCH_HOP).transpose(2, 3).reshape(-1, PATCH, N_MELS)
            h += [model(patches[lo : lo + batch_size]) for lo in range(0, len(patches), batch_size)]
    finally:
        model.train(was_training)
    centres = torch.arange(n_frames, device=device, dtype=torch.float64) * PATCH_HOP + (PATCH - 1) / 2
    timestamps = (centres * (HOP * 1000.0 / SR)).float().repeat(n_sounds, 1)
    return torch.cat(h).view(n_sounds, n_frames, -1), timestamps


def get_scene_embeddings(audio: torch.Tensor, model: EmbeddingModel, batch_size: int = 512) -> torch.Tensor:
    """(n_sounds, d) mean of each sound's patch embeddings (see :func:`get_timestamp_embeddings`)."""
    return get_timestamp_embeddings(audio, model, batch_size)[0].mean(dim=1)
