"""Patch sampling, mix-back against the NumPy reference, and the whole view pipeline."""

import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_clips

from uclser_tune.config import config_from_dict
from uclser_tune.views import ViewPipeline, gather_patches, mixback, sample_starts
from uclser_tune.views import reference


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_starts_cover_the_valid_range_uniformly():
    lengths = torch.full((20000,), 151)
    s1, s2, fallbacks = sample_starts(lengths, 101, "random", 0, gen())
    assert fallbacks == 0 and int(s1.min()) == 0 and int(s1.max()) == 50
    counts = torch.bincount(s1, minlength=51).float()
    assert float(counts.std() / counts.mean()) < 0.1
    assert float((s1 == s2).float().mean()) < 0.05


def test_same_and_separation_modes():
    lengths = torch.tensor([101, 150, 300, 600, 1000] * 40)
    s1, s2, _ = sample_starts(lengths, 101, "same", 0, gen())
    assert torch.equal(s1, s2)
    s1, s2, fallbacks = sample_starts(lengths, 101, "separation", 200, gen())
    room = lengths - 101
    assert ((s1 >= 0) & (s1 <= room) & (s2 >= 0) & (s2 <= room)).all()
    expected = room.clamp(max=200)
    assert torch.equal((s1 - s2).abs(), expected)
    assert fallbacks == int((room < 200).sum()) == 120
    assert 0 < float((s1 > s2).float().mean()) < 1  # both directions occur


def test_gather_is_the_clip_slice(clips):
    starts = torch.tensor([0, 5, 10, 0, 3, 7])
    p = gather_patches(clips.frames, clips.offsets, starts, 101)
    for i in range(6):
        o = int(clips.offsets[i] + starts[i])
        assert torch.equal(p[i], clips.frames[o : o + 101])


@pytest.mark.parametrize("energy_adjust", [True, False])
def test_mixback_equals_reference(energy_adjust):
    g = gen()
    fg, bg = torch.randn(5, 101, 96, generator=g) - 3, torch.randn(5, 101, 96, generator=g) - 5
    lam = torch.rand(5, generator=g) * 0.05
    out = mixback(fg, bg, lam, energy_adjust).numpy()
    for i in range(5):
        mix = reference.mix_energy if energy_adjust else reference.mix_plain
        ref = mix(fg[i].double().numpy(), bg[i].double().numpy(), float(lam[i]))
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


def test_energy_adjusted_background_stays_12_8_db_below():
    g = gen()
    fg, bg = torch.randn(3, 101, 96, generator=g), torch.randn(3, 101, 96, generator=g) + 4
    lam = torch.full((3,), 0.05)
    bg_part = torch.log10(lam.view(-1, 1, 1) * 10 ** bg * ((10 ** fg).sum((1, 2), keepdim=True) /
                                                          (10 ** bg).sum((1, 2), keepdim=True)))
    fg_part = torch.log10((1 - lam.view(-1, 1, 1)) * 10 ** fg)
    ratio_db = 10 * (torch.logsumexp(fg_part * np.log(10), (1, 2)) - torch.logsumexp(bg_part * np.log(10), (1, 2))) / np.log(10)
    assert torch.allclose(ratio_db, torch.full((3,), 10 * np.log10(0.95 / 0.05)), atol=1e-3)  # = 12.79 dB
    assert torch.isfinite(mixback(fg, bg, lam)).all()


def pipeline(**views):
    cfg = config_from_dict({"views": views})
    return ViewPipeline.from_config(cfg.views, mean=-2.0, std=1.0)


@pytest.mark.parametrize("b", [1, 2, 6])
def test_pipeline_shapes_determinism_and_normalisation(b):
    clips = make_clips(6)
    idx = torch.arange(b)
    v1, v2 = pipeline()(clips, idx, gen(1))
    w1, w2 = pipeline()(clips, idx, gen(1))
    assert v1.shape == v2.shape == (b, 1, 101, 96)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, v2)
    raw = pipeline(ops=[], mixback=False, sampling="same")(clips, idx, gen(1))[0]
    assert abs(float(raw.mean())) < 0.2  # (x - mean) / std with the clips' own mean


def test_no_ops_same_sampling_gives_identical_views():
    v1, v2 = pipeline(ops=[], mixback=False, sampling="same")(make_clips(6), torch.arange(6), gen())
    assert torch.equal(v1, v2)


def test_mixback_uses_other_clips_and_one_lambda_per_clip():
    clips = make_clips(4)
    p = pipeline(ops=[])
    g = gen()
    idx = torch.arange(4).repeat(500)
    bg = torch.stack([p.background(clips, idx, g) for _ in range(1)])[0]
    # the background patch never comes from the clip itself: compare with every patch of the clip
    for row, i in enumerate(idx[:40].tolist()):
        o, n = int(clips.offsets[i]), int(clips.lengths[i])
        own = clips.frames[o : o + n]
        assert not any(torch.equal(bg[row], own[s : s + 101]) for s in range(n - 100))


def test_random_order_per_sample_differs_from_fixed():
    clips, idx = make_clips(6), torch.arange(6).repeat(10)
    fixed = pipeline(ops=["time_shift", "specaugment"])(clips, idx, gen())[0]
    rand = pipeline(ops=["time_shift", "specaugment"], order="random_per_sample")(clips, idx, gen())[0]
    assert fixed.shape == rand.shape and not torch.equal(fixed, rand)


def test_views_import_no_search_or_audio_libraries():
    code = ("import sys, uclser_tune.views, uclser_tune.models, uclser_tune.losses, uclser_tune.evaluation, "
            "uclser_tune.training; bad = [m for m in ('ray', 'optuna', 'librosa', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_reference_views_run_and_match_shape():
    c = make_clips(5)
    v1, v2 = reference.reference_views(c.frames.numpy(), c.offsets.numpy(), c.lengths.numpy(), np.arange(5),
                                       np.random.RandomState(0), random.Random(0), -2.0, 1.0)
    assert v1.shape == v2.shape == (5, 1, 101, 96) and np.isfinite(v1).all()
