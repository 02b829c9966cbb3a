"""Every augmentation op: shapes, per-sample parameters, reference distributions, equality with the
per-sample NumPy reference on the same parameters, determinism."""

import math
import random

import numpy as np
import pytest
import torch

from uclser_tune.views import reference
from uclser_tune.views.ops import OPS, build_op, validate_op_params

T, F = 101, 96


def batch(b, seed=0):
    return torch.randn(b, T, F, generator=torch.Generator().manual_seed(seed)) - 2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("b", [1, 2, 128])
def test_shapes_and_determinism(name, b):
    op, x = build_op(name), batch(b)
    y1, y2 = op(x, gen(3)), op(x, gen(3))
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert torch.equal(y1, y2)
    assert torch.isfinite(y1).all()


@pytest.mark.parametrize("name", [n for n in OPS if n != "time_reversal"])
def test_parameters_differ_across_the_batch(name):
    params = build_op(name).sample(batch(128), gen())
    assert any(len(torch.unique(v)) > 5 for v in params.values() if v.dim() >= 1)


def test_time_reversal_mask_is_per_sample():
    x = batch(128)
    y = build_op("time_reversal")(x, gen())
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(0)) for i in range(128)])
    assert 40 < int(flipped.sum()) < 88  # p = 0.5


def test_rrc_distribution_matches_the_reference():
    params = build_op("rrc").sample(batch(20000), gen())
    area = (params["height"] * params["width"]).float() / (T * F)
    assert abs(float(area.mean()) - 0.87) < 0.01
    assert int(params["width"].min()) >= 76 and int(params["width"].max()) <= 96
    assert int(params["height"].min()) >= 80 and int(params["height"].max()) <= 101
    rnd = random.Random(0)
    ref = np.array([reference.rrc_params(rnd, (T, F)) for _ in range(20000)])
    assert abs(float(area.mean()) - (ref[:, 2] * ref[:, 3]).mean() / (T * F)) < 0.005
    assert abs(params["width"].float().mean().item() - ref[:, 3].mean()) < 0.3
    assert abs(params["height"].float().mean().item() - ref[:, 2].mean()) < 0.3


def test_rrc_falls_back_to_identity_when_no_try_fits():
    op = build_op("rrc", {"scale_min": 1.0, "scale_max": 1.0, "ratio_min": 2.0, "ratio_max": 3.0})
    x = batch(4)
    assert torch.allclose(op(x, gen()), x, atol=1e-4)


def test_rrc_equals_reference_on_the_same_crops():
    op, x = build_op("rrc"), batch(16)
    params = op.sample(x, gen(5))
    y = op.apply(x, params).numpy()
    for i in range(16):
        crop = [int(params[k][i]) for k in ("top", "left", "height", "width")]
        t, l, h, w = crop
        ref = reference.resize_bilinear(x[i].double().numpy()[t : t + h, l : l + w], T, F)
        np.testing.assert_allclose(y[i], ref, atol=1e-4)
    # and the resize is torch's own bilinear interpolation of the crop
    t, l, h, w = (int(params[k][0]) for k in ("top", "left", "height", "width"))
    ref = torch.nn.functional.interpolate(x[:1, None, t : t + h, l : l + w], size=(T, F), mode="bilinear",
                                          align_corners=False)
    torch.testing.assert_close(torch.from_numpy(y[:1]), ref[:, 0], atol=1e-4, rtol=0)


def test_compression_and_noise_equal_reference():
    x = batch(8)
    op = build_op("compression")
    p = op.sample(x, gen())
    assert 0.75 <= float(p["c"].min()) and float(p["c"].max()) <= 1.0
    np.testing.assert_allclose(op.apply(x, p).numpy(), x.numpy() * p["c"].numpy()[:, None, None], rtol=1e-6)
    expand = build_op("compression", {"alpha": 1.5}).sample(x, gen())["c"]
    assert float(expand.min()) >= 1.0 and float(expand.max()) <= 1.5
    op = build_op("noise")
    p = op.sample(x, gen())
    assert float(p["sigma"].max()) <= 0.01
    ref = x.numpy() + p["sigma"].numpy()[:, None, None] * p["noise"].numpy()
    np.testing.assert_allclose(op.apply(x, p).numpy(), ref, rtol=1e-6, atol=1e-6)
    big = build_op("noise").sample(batch(128), gen())["sigma"]
    assert abs(float(big.mean()) - 0.005) < 0.001


def test_specaugment_equals_a_slow_mask():
    op, x = build_op("specaugment"), batch(32)
    p = op.sample(x, gen(1))
    y = op.apply(x, p).numpy()
    for i in range(32):
        ref = x[i].numpy().copy()
        low = ref.min()
        for s, w in zip(p["f_start"][i].tolist(), p["f_width"][i].tolist()):
            ref[:, s : s + w] = low
        for s, w in zip(p["t_start"][i].tolist(), p["t_width"][i].tolist()):
            ref[s : s + w, :] = low
        np.testing.assert_array_equal(y[i], ref)
    widths = op.sample(batch(4000), gen())["f_width"]
    assert int(widths.min()) == 0 and int(widths.max()) == 19


@pytest.mark.parametrize("name, axis, hi", [("time_shift", 0, 29), ("freq_shift", 1, 9)])
def test_shifts_equal_np_roll(name, axis, hi):
    op, x = build_op(name), batch(64)
    p = op.sample(x, gen())
    assert int(p["shift"].min()) == 1 and int(p["shift"].max()) == hi
    y = op.apply(x, p).numpy()
    for i in range(64):
        np.testing.assert_array_equal(y[i], np.roll(x[i].numpy(), int(p["shift"][i]), axis=axis))


def test_blur_equals_a_slow_convolution():
    op, x = build_op("blur"), batch(6)
    p = op.sample(x, gen())
    y = op.apply(x, p).numpy()
    for i in range(6):
        r, s = int(p["half"][i]), float(p["sigma"][i])
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        k /= k.sum()
        img = x[i].double().numpy()
        pad = np.pad(img, ((r, r), (0, 0)), mode="edge")
        rows = sum(k[j] * pad[j : j + T] for j in range(2 * r + 1))
        pad = np.pad(rows, ((0, 0), (r, r)), mode="edge")
        ref = sum(k[j] * pad[:, j : j + F] for j in range(2 * r + 1))
        np.testing.assert_allclose(y[i], ref, atol=1e-5)


def test_apply_probability_masks_per_sample():
    x = batch(200)
    y = build_op("compression", {"p": 0.3})(x, gen())
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.2 < float(changed) < 0.4


@pytest.mark.parametrize("name, params, word", [
    ("rrc", {"scale_min": 0.9, "scale_max": 0.8}, "scale_min"),
    ("noise", {"sigma": 0.1}, "sigma_max"),
    ("noise", {"sigma_max": -1}, "allowed range"),
    ("specaugment", {"freq_masks": 1.5}, "integer"),
    ("blur", {"kernel_max": 4}, "odd"),
    ("warp", {}, "time_shift"),
])
def test_parameter_validation_names_the_parameter(name, params, word):
    with pytest.raises(ValueError, match=word):
        validate_op_params(name, params)


def test_defaults_are_the_references():
    assert validate_op_params("rrc", {})["scale_min"] == 0.8
    assert math.isclose(validate_op_params("rrc", {})["ratio_max"], 4 / 3)
    assert validate_op_params("compression", {})["alpha"] == 0.75
    assert validate_op_params("noise", {})["sigma_max"] == 0.01
    assert validate_op_params("time_shift", {})["max_shift"] == 29
    assert validate_op_params("freq_shift", {})["max_shift"] == 9
    assert validate_op_params("time_reversal", {})["p"] == 0.5
