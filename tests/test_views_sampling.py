"""Patch sampling and mix-back, against slow references."""

import numpy as np
import pytest
import torch

from uclser_tune.views import gather_patches, mixback, reference, sample_starts


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_starts_are_independent_and_uniform_over_the_valid_range():
    lengths = torch.full((20000,), 151)
    s1, s2, fallbacks = sample_starts(lengths, 101, "random", 0, gen())
    assert fallbacks == 0
    for s in (s1, s2):
        assert (int(s.min()), int(s.max())) == (0, 50)
        counts = torch.bincount(s, minlength=51).float()
        assert float(counts.std() / counts.mean()) < 0.1
    assert float((s1 == s2).float().mean()) < 0.04  # ≈ 1/51
    assert abs(float(torch.corrcoef(torch.stack([s1, s2]).float())[0, 1])) < 0.03


def test_starts_respect_each_clips_length():
    lengths = torch.tensor([101, 102, 150, 3000] * 500)
    s1, s2, _ = sample_starts(lengths, 101, "random", 0, gen())
    assert ((s1 >= 0) & (s1 <= lengths - 101) & (s2 >= 0) & (s2 <= lengths - 101)).all()
    assert int(s1[lengths == 3000].max()) > 2800


def test_same_mode():
    lengths = torch.tensor([101, 150, 300, 600, 1000] * 40)
    s1, s2, fallbacks = sample_starts(lengths, 101, "same", 0, gen())
    assert torch.equal(s1, s2) and fallbacks == 0 and (s1 <= lengths - 101).all()


@pytest.mark.parametrize("d", [25, 200, 400])
def test_separation_is_exact_and_short_clips_fall_back(d):
    lengths = torch.tensor([101, 150, 300, 600, 1000] * 400)
    s1, s2, fallbacks = sample_starts(lengths, 101, "separation", d, gen())
    room = lengths - 101
    assert ((s1 >= 0) & (s1 <= room) & (s2 >= 0) & (s2 <= room)).all()
    assert torch.equal((s1 - s2).abs(), room.clamp(max=d))  # the largest feasible separation
    assert fallbacks == int((room < d).sum())
    assert 0.45 < float((s1 > s2)[room > 0].float().mean()) < 0.55  # both directions
    long = lengths == 1000
    assert int(torch.minimum(s1, s2)[long].max()) > 0.95 * (899 - d)  # the pair is placed anywhere it fits


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="random, same, separation"):
        sample_starts(torch.tensor([200]), 101, "nearby", 0, gen())


def test_gather_is_the_clip_slice(clips):
    starts = torch.tensor([0, 5, 10, 0, 3, 7])
    p = gather_patches(clips.frames, clips.offsets, starts, 101)
    assert p.shape == (6, 101, 96)
    for i in range(6):
        o = int(clips.offsets[i] + starts[i])
        assert torch.equal(p[i], clips.frames[o : o + 101])


@pytest.mark.parametrize("energy_adjust", [True, False])
@pytest.mark.parametrize("b", [1, 2, 128])
def test_mixback_equals_the_reference(energy_adjust, b):
    g = gen(b)
    fg, bg = torch.randn(b, 101, 96, generator=g) - 3, torch.randn(b, 101, 96, generator=g) - 5
    lam = torch.rand(b, generator=g) * 0.05
    before = fg.clone(), bg.clone()
    out = mixback(fg, bg, lam, energy_adjust).numpy()
    assert torch.equal(fg, before[0]) and torch.equal(bg, before[1])
    mix = reference.mix_energy if energy_adjust else reference.mix_plain
    for i in range(0, b, max(1, b // 8)):
        ref = mix(fg[i].double().numpy(), bg[i].double().numpy(), float(lam[i]))
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


def test_mixback_keeps_the_foreground_12_8_db_above_the_background():
    """Both energies measured on mixback's own output: the foreground's share is the mix with a silent
    background (10^-30 per cell) and no energy adjustment, the background's is the rest of the mix."""
    g = gen()
    fg, bg = torch.randn(4, 101, 96, generator=g), torch.randn(4, 101, 96, generator=g) + 4  # loud background
    silent = torch.full_like(bg, -30.0)

    def snr_db(lam: torch.Tensor, energy_adjust: bool = True) -> torch.Tensor:
        foreground = (10.0 ** mixback(fg, silent, lam, energy_adjust=False).double()).sum((1, 2))
        mixed = (10.0 ** mixback(fg, bg, lam, energy_adjust).double()).sum((1, 2))
        return 10 * torch.log10(foreground / (mixed - foreground))

    lam = torch.tensor([0.05, 0.05, 0.02, 0.001])
    expected = 10 * torch.log10((1 - lam.double()) / lam.double())  # 12.79 dB at λ = 0.05 (10·log10 19), more below
    torch.testing.assert_close(snr_db(lam), expected, rtol=1e-4, atol=0)
    assert (snr_db(lam) > 12.78).all()
    assert (snr_db(lam, energy_adjust=False) < 0).all()  # without the adjustment the loud background wins
    torch.testing.assert_close(mixback(fg, bg, torch.zeros(4)), fg, atol=2e-6, rtol=0)  # λ = 0: the patch


def test_mixback_of_float16_patches_computes_in_float32():
    g = gen()
    fg, bg = torch.randn(2, 101, 96, generator=g) - 3, torch.randn(2, 101, 96, generator=g) - 3
    lam = torch.tensor([0.01, 0.04])
    out = mixback(fg.half(), bg.half(), lam)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, mixback(fg.half().float(), bg.half().float(), lam))
