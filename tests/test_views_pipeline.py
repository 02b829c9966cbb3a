"""The whole view pipeline: against the per-sample NumPy reference on its own draws, op order as data,
mix-back bookkeeping, determinism, and import hygiene."""

import random
import sys

import children
import numpy as np
import pytest
import torch
from conftest import make_clips

from uclser_tune.config import config_from_dict
from uclser_tune.views import OPS, ViewPipeline, reference

MEAN, STD = -2.0, 1.5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def pipeline(**views):
    return ViewPipeline.from_config(config_from_dict({"views": views}).views, mean=MEAN, std=STD)


@pytest.mark.parametrize("b", [1, 2, 128])
def test_shapes_determinism_and_normalisation(b):
    clips, idx = make_clips(130, max_len=250), torch.arange(b)
    v1, v2 = pipeline()(clips, idx, gen(1))
    w1, w2 = pipeline()(clips, idx, gen(1))
    assert v1.shape == v2.shape == (b, 1, 101, 96) and v1.dtype == torch.float32
    assert v1.is_contiguous() and v2.is_contiguous()
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, v2) and not torch.equal(v1, pipeline()(clips, idx, gen(2))[0])
    raw = pipeline(ops=[], mixback=False)(clips, idx, gen(1))[0]
    assert abs(float(raw.mean())) < 0.1 and abs(float(raw.std()) - 1 / STD) < 0.05  # frames ~ N(-2, 1)


def test_default_pipeline_equals_the_per_sample_reference_on_the_same_draws():
    """mix-back (energy-adjusted), RRC, compression, noise, normalise: the batched pipeline's own
    draws, rendered one view at a time by the NumPy transcription of the reference."""
    clips, idx = make_clips(12, max_len=300), torch.tensor([3, 0, 7, 7, 11])
    pipe = pipeline()
    params = pipe.sample(clips, idx, gen(4))
    views = pipe.render(clips, params)
    frames, offsets = clips.frames.numpy(), clips.offsets.numpy()
    b = len(idx)
    for row in range(2 * b):
        ref = reference.render_view(frames, offsets, int(params.clips[row]), reference.view_of(params, row), MEAN, STD)
        np.testing.assert_allclose(views[row, 0].numpy(), ref, atol=1e-5)
    assert torch.equal(params.clips, idx.repeat(2))


def test_mixback_off_and_plain_mix_follow_the_reference():
    clips, idx = make_clips(6), torch.arange(6)
    pipe = pipeline(ops=[], mixback_energy_adjust=False, mixback_alpha=0.5)
    params = pipe.sample(clips, idx, gen())
    v1 = pipe.render(clips, params)
    f, o = clips.frames.double(), clips.offsets
    for i in range(6):
        fg = f[o[i] + params.starts[i] :][:101].numpy()
        bg = f[o[params.bg_clips[i]] + params.bg_starts[i] :][:101].numpy()
        ref = (reference.mix_plain(fg, bg, float(params.lam[i])) - MEAN) / STD
        np.testing.assert_allclose(v1[i, 0].numpy(), ref, atol=1e-5)
    v1, v2 = pipeline(ops=[], mixback=False, sampling="same")(clips, idx, gen())
    assert torch.equal(v1, v2)
    assert pipeline(mixback=False).sample(clips, idx, gen()).bg_clips is None


def test_backgrounds_come_from_two_other_clips_and_share_lambda():
    clips, b = make_clips(5), 2000
    idx = torch.arange(5).repeat(b // 5)
    params = pipeline(mixback_alpha=0.2).sample(clips, idx, gen())
    bg1, bg2 = params.bg_clips[:b], params.bg_clips[b:]
    assert (bg1 != idx).all() and (bg2 != idx).all() and (bg1 != bg2).all()
    assert len(torch.unique(bg1[idx == 0])) == 4  # every other clip is used
    assert torch.equal(params.lam[:b], params.lam[b:]) and len(torch.unique(params.lam)) > 0.99 * b
    assert 0 <= float(params.lam.min()) and float(params.lam.max()) < 0.2
    assert ((params.bg_starts >= 0) & (params.bg_starts <= clips.lengths[params.bg_clips] - 101)).all()
    two = make_clips(2)  # only one other clip: both views mix with it
    p2 = pipeline().sample(two, torch.tensor([0, 1]), gen())
    assert torch.equal(p2.bg_clips, torch.tensor([1, 0, 1, 0]))


def test_fixed_order_is_the_listed_order():
    clips, idx = make_clips(6), torch.arange(6)
    pipe = pipeline(ops=["time_shift", "specaugment", "compression"], mixback=False)
    params = pipe.sample(clips, idx, gen())
    v1 = pipe.render(clips, params)[:6]
    x = torch.stack([clips.frames[clips.offsets[i] + params.starts[i] :][:101] for i in range(6)])
    for op, p in zip(pipe.ops, params.ops):
        x = op.apply(x, {k: v[:6] for k, v in p.items()})
    torch.testing.assert_close(v1[:, 0], (x - MEAN) / STD)


def test_random_order_per_sample_applies_each_views_own_permutation():
    clips, idx = make_clips(6), torch.arange(6).repeat(5)
    ops = ["time_shift", "specaugment", "compression", "time_reversal"]
    pipe = pipeline(ops=ops, order="random_per_sample", mixback=False)
    params = pipe.sample(clips, idx, gen())
    views = pipe.render(clips, params)
    assert len({tuple(r) for r in params.order.tolist()}) > 10  # many different orders in one batch
    starts, offsets = params.starts, clips.offsets[idx].repeat(2)
    for row in range(60):
        x = clips.frames[offsets[row] + starts[row] :][:101][None]
        for k in params.order[row].tolist():
            x = pipe.ops[k].masked(x, {key: v[row : row + 1] for key, v in params.ops[k].items()})
        torch.testing.assert_close(views[row], (x - MEAN) / STD)


@pytest.mark.parametrize("ops, order", [(["rrc", "compression", "noise"], "random_per_sample"),
                                       (list(OPS), "fixed")])
def test_rendering_in_chunks_changes_nothing(ops, order):
    clips, idx = make_clips(20), torch.arange(20)
    pipe = pipeline(ops=ops, order=order)
    params = pipe.sample(clips, idx, gen())
    pipe.cpu_chunk = 40
    whole = pipe.render(clips, params)
    pipe.cpu_chunk = 7
    torch.testing.assert_close(pipe.render(clips, params), whole, atol=1e-6, rtol=0)


def test_separation_fallbacks_are_counted():
    clips = make_clips(8, min_len=101, max_len=200)
    pipe = pipeline(sampling="separation", separation=125)
    pipe(clips, torch.arange(8), gen())
    pipe(clips, torch.arange(8), gen())
    assert pipe.stats["fallbacks"] == 2 * int((clips.lengths - 101 < 125).sum()) > 0


def test_misuse_is_reported():
    with pytest.raises(ValueError, match="mix-back needs at least two clips"):
        pipeline()(make_clips(1), torch.tensor([0]), gen())
    with pytest.raises(ValueError, match="patch_frames=300"):
        pipeline(patch_frames=300)(make_clips(3, max_len=250), torch.tensor([0]), gen())
    with pytest.raises(ValueError, match="fixed, random_per_sample"):
        ViewPipeline(["rrc"], {}, 0.0, 1.0, order="shuffled")
    with pytest.raises(ValueError, match="random, same, separation"):
        ViewPipeline(["rrc"], {}, 0.0, 1.0, sampling="nearby")
    with pytest.raises(ValueError, match="unknown augmentation op 'warp'"):
        ViewPipeline(["warp"], {}, 0.0, 1.0)
    with pytest.raises(ValueError, match="rrc.scale_min"):
        ViewPipeline(["rrc"], {"rrc": {"scale_min": 2}}, 0.0, 1.0)


def test_reference_baseline_runs():
    c = make_clips(5)
    v1, v2 = reference.reference_views(c.frames.numpy(), c.offsets.numpy(), c.lengths.numpy(), np.arange(5),
                                       np.random.RandomState(0), random.Random(0), MEAN, STD)
    assert v1.shape == v2.shape == (5, 1, 101, 96) and v1.dtype == np.float32 and np.isfinite(v1).all()
    assert not np.array_equal(v1, v2)


def test_views_import_no_search_or_audio_libraries():
    code = ("import sys, uclser_tune.views, uclser_tune.views.reference; "
            "bad = [m for m in ('ray', 'optuna', 'librosa', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = children.run([sys.executable, "-c", code], 120, "the import check")
    assert out.returncode == 0, out.stdout + out.stderr
