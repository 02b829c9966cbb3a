"""HEAR-style embedding API: the torch log-mel against the librosa extractor, the mel filterbank against
librosa's, shapes and timestamps, the whole path against the evaluation patches, and loading a real
pre-training checkpoint without librosa."""

import sys

import children
import librosa
import numpy as np
import pytest
import torch

from uclser_tune.config import config_from_dict
from uclser_tune.data import features
from uclser_tune.data.tensors import ClipTensors
from uclser_tune.embed import (
    EmbeddingModel,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
    logmel,
    mel_filterbank,
)
from uclser_tune.evaluation.patches import embed_patches, eval_patch_index
from uclser_tune.models import build_encoder
from uclser_tune.training import load_checkpoint, pretrain, save_checkpoint

SR = 22_050


def signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "noise":
        return rng.normal(size=t.size)
    if kind == "sweep":  # 100 Hz → 10 kHz exponential chirp, plus a DC offset the mean removal must take out
        return 0.3 + 0.5 * np.sin(2 * np.pi * 100 * seconds / np.log(100) * (100 ** (t / seconds) - 1))
    if kind == "quiet":
        return 1e-7 * rng.normal(size=t.size)
    raise ValueError(kind)


@pytest.mark.parametrize("kwargs", [{}, {"sr": 16_000, "n_fft": 512, "n_mels": 40, "fmin": 0.0, "fmax": 8_000.0}])
def test_mel_filterbank_matches_librosa(kwargs):
    full = {"sr": SR, "n_fft": 2048, "n_mels": 96, "fmin": 50.0, "fmax": 10_500.0, **kwargs}
    expected = librosa.filters.mel(**full, htk=False, norm=None, dtype=np.float64)
    ours = mel_filterbank(**full)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind, seconds", [("noise", 2.5), ("sweep", 3.0), ("noise", 0.4), ("sweep", 1.0),
                                           ("quiet", 1.5)])
def test_logmel_matches_the_librosa_extractor(kind, seconds):
    y = signal(kind, seconds)
    batch = np.stack([y, 0.05 * y[::-1] - 0.2, signal("noise", seconds, seed=1)])  # per-sound scaling differs
    ours = logmel(torch.from_numpy(batch).float())
    for row, got in zip(batch.astype(np.float32), ours):
        expected = features.logmel(row, SR)
        assert got.shape == expected.shape == (1 + max(len(row), SR) // 220, 96)
        assert np.abs(got.numpy() - expected).max() < 1e-3


@pytest.fixture
def random_model():
    torch.manual_seed(0)
    encoder = build_encoder("vgg_like", 0.125)
    for module in encoder.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return EmbeddingModel(encoder, mean=-4.0, std=2.0).eval()


@pytest.mark.parametrize("seconds", [0.4, 1.0, 1.0 + 1 / SR, 3.3])
def test_shapes_and_timestamps(random_model, seconds):
    n_samples = round(seconds * SR)
    audio = torch.randn(3, n_samples)
    emb, ts = get_timestamp_embeddings(audio, random_model)
    n_frames = len(eval_patch_index(torch.tensor([1 + max(n_samples, SR) // 220]))[1])
    assert emb.shape == (3, n_frames, random_model.timestamp_embedding_size)
    assert ts.shape == (3, n_frames) and ts.dtype == torch.float32
    step = 50 * 220 / SR * 1000
    expected = (50 + 50 * np.arange(n_frames)) * 220 / SR * 1000  # centre frame of each 101-frame patch
    np.testing.assert_allclose(ts.numpy(), np.broadcast_to(expected, ts.shape), rtol=1e-6)
    assert np.allclose(np.diff(ts.numpy(), axis=1), step, rtol=1e-5)
    scene = get_scene_embeddings(audio, random_model)
    assert scene.shape == (3, random_model.scene_embedding_size)


def test_embeddings_match_the_evaluation_patches_of_librosa_features(random_model):
    audio = torch.from_numpy(np.stack([signal("noise", 3.3), signal("sweep", 3.3), signal("noise", 3.3, 2)])).float()
    emb, _ = get_timestamp_embeddings(audio, random_model)  # 3 sounds × 5 patches: one log-mel chunk, one batch
    feats = [torch.from_numpy(features.logmel(y, SR)) for y in audio.numpy()]
    lengths = torch.tensor([len(f) for f in feats])
    clips = ClipTensors(torch.cat(feats), torch.cumsum(lengths, 0) - lengths, lengths, torch.zeros(3, dtype=torch.long),
                        ["a", "b", "c"])
    expected, clip_index = embed_patches(random_model.encoder, clips, mean=-4.0, std=2.0)
    assert torch.equal(clip_index, torch.arange(3).repeat_interleave(emb.shape[1]))
    # the features agree to ~5e-7 (measured embedding gap 9e-8; skipping the normalisation gives 4e-3)
    torch.testing.assert_close(emb.reshape(-1, emb.shape[-1]), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(get_scene_embeddings(audio, random_model), emb.mean(1), rtol=1e-5, atol=1e-6)
    for batch_size in (4, 10):  # one sound per chunk in batches of 4 + 1 patches; chunks of 2 + 1 sounds
        torch.testing.assert_close(get_timestamp_embeddings(audio, random_model, batch_size)[0], emb,
                                   rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_store, tmp_path_factory):
    cfg = config_from_dict({"model": {"encoder": "resnet18", "width": 0.125, "proj_hidden": 32, "proj_dim": 16},
                            "train": {"epochs": 1, "batch_size": 16, "max_batches_per_epoch": 1},
                            "eval": {"knn_k": 5}, "data": {"synth_size": "tiny"}})
    run = tmp_path_factory.mktemp("run")
    pretrain(cfg, tiny_store, report=lambda metrics, state: (save_checkpoint(state, run),
                                                             save_checkpoint(state, run / "best.pt")))
    return run


@pytest.mark.parametrize("name", ["", "checkpoint.pt", "best.pt"])
def test_load_model_from_a_pretraining_checkpoint(checkpoint_dir, tiny_store, name):
    state = load_checkpoint(checkpoint_dir)
    model = load_model(checkpoint_dir / name if name else checkpoint_dir)
    assert not model.training and model.sample_rate == SR
    assert model.scene_embedding_size == model.timestamp_embedding_size == model.encoder.embed_dim
    assert (model.mean, model.std) == (float(tiny_store.mean), float(tiny_store.std))
    encoder_state = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
    loaded = model.encoder.state_dict()
    assert loaded.keys() == encoder_state.keys()
    for key, value in encoder_state.items():
        assert torch.equal(loaded[key], value), key
    scene = get_scene_embeddings(torch.randn(2, SR), model)
    assert scene.shape == (2, model.scene_embedding_size) and torch.isfinite(scene).all()


def test_embed_does_not_import_librosa():
    code = "import sys, uclser_tune.embed; assert 'librosa' not in sys.modules, 'librosa imported'"
    out = children.run([sys.executable, "-c", code], 120, "the import check")
    assert out.returncode == 0, out.stderr
