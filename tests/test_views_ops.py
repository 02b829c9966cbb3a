"""Every augmentation op: shapes, per-sample parameters, the reference's parameter distributions,
equality with slow per-sample references on the same parameters, determinism, validation."""

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


def draw(name, b=128, seed=0, **params):
    return build_op(name, params).sample(torch.Size((b, T, F)), gen(seed), torch.device("cpu"))


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("b", [1, 2, 128])
def test_shapes_determinism_and_inputs_untouched(name, b):
    op, x = build_op(name), batch(b)
    before = x.clone()
    y1, y2 = op(x, gen(3)), op(x, gen(3))
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert torch.equal(y1, y2) and torch.equal(x, before)
    assert torch.isfinite(y1).all()
    assert not torch.equal(op(x, gen(4)), y1) or (name == "time_reversal" and b < 3)


@pytest.mark.parametrize("name", [n for n in OPS if n != "time_reversal"])
def test_parameters_differ_across_the_batch(name):
    params = draw(name)
    assert any(len(torch.unique(v)) > 5 for k, v in params.items() if k != "apply")


def test_time_reversal_flips_a_random_half():
    x = batch(128)
    y = build_op("time_reversal")(x, gen())
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(0)) for i in range(128)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(128)])
    assert torch.equal(flipped, ~kept) and 40 < int(flipped.sum()) < 88  # p = 0.5


def test_apply_probability_masks_per_sample():
    x = batch(400)
    y = build_op("compression", {"p": 0.3})(x, gen())
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.22 < float(changed) < 0.38


# ----------------------------------------------------------------------------- random resized crop


def test_rrc_distribution_matches_the_reference():
    p = draw("rrc", b=20000)
    h, w = p["height"], p["width"]
    area = (h * w).float() / (T * F)
    assert abs(float(area.mean()) - 0.87) < 0.01
    assert 76 <= int(w.min()) <= 78 and int(w.max()) == 96  # 76 and 80 are possible but rare
    assert 80 <= int(h.min()) <= 82 and int(h.max()) == 101
    assert ((p["top"] >= 0) & (p["top"] + h <= T) & (p["left"] >= 0) & (p["left"] + w <= F)).all()
    rnd = random.Random(0)
    ref = np.array([reference.rrc_params(rnd) for _ in range(20000)])  # (top, left, height, width)
    assert abs(float(area.mean()) - (ref[:, 2] * ref[:, 3]).mean() / (T * F)) < 0.003
    assert abs(w.float().mean().item() - ref[:, 3].mean()) < 0.15
    assert abs(h.float().mean().item() - ref[:, 2].mean()) < 0.15
    assert abs(p["top"].float().mean().item() - ref[:, 0].mean()) < 0.2


def test_rrc_falls_back_to_the_whole_patch_when_no_try_fits():
    op = build_op("rrc", {"scale_min": 1.0, "scale_max": 1.0, "ratio_min": 2.0, "ratio_max": 3.0})
    x = batch(4)
    p = op.sample(x.shape, gen(), x.device)
    assert (p["height"] == T).all() and (p["width"] == F).all() and (p["top"] == 0).all()
    assert torch.allclose(op(x, gen()), x, atol=1e-6)


def test_rrc_equals_the_reference_resize_on_the_same_crops():
    op, x = build_op("rrc"), batch(16)
    p = op.sample(x.shape, gen(5), x.device)
    y = op.apply(x, p).numpy()
    for i in range(16):
        top, left, h, w = (int(p[k][i]) for k in ("top", "left", "height", "width"))
        crop = x[i, top : top + h, left : left + w]
        np.testing.assert_allclose(y[i], reference.resize_bilinear(crop.numpy(), T, F), atol=1e-5)
        ref = torch.nn.functional.interpolate(crop[None, None], size=(T, F), mode="bilinear")[0, 0]
        np.testing.assert_allclose(y[i], ref.numpy(), atol=5e-5)  # torch's resize: float32 coordinates


def test_reference_resize_is_pils():
    image = pytest.importorskip("PIL.Image")
    crop = batch(1)[0, 3:90, 5:85].numpy()
    pil = np.array(image.fromarray(crop).resize((F, T), image.BILINEAR))
    np.testing.assert_allclose(reference.resize_bilinear(crop, T, F), pil, atol=1e-5)


# ----------------------------------------------------------------------------- compression, noise


def test_compression_and_noise_equal_reference():
    x = batch(8)
    op = build_op("compression")
    p = op.sample(x.shape, gen(), x.device)
    np.testing.assert_allclose(op.apply(x, p).numpy(), x.numpy() * p["c"].numpy()[:, None, None], rtol=1e-6)
    op = build_op("noise")
    p = op.sample(x.shape, gen(), x.device)
    ref = x.numpy() + p["sigma"].numpy()[:, None, None] * p["noise"].numpy()
    np.testing.assert_allclose(op.apply(x, p).numpy(), ref, atol=1e-6)


def test_compression_and_noise_distributions():
    c = draw("compression", b=20000)["c"]
    assert 0.75 <= float(c.min()) and float(c.max()) < 1.0 and abs(float(c.mean()) - 0.875) < 0.003
    c = draw("compression", b=20000, alpha=1.5)["c"]
    assert 1.0 <= float(c.min()) and float(c.max()) < 1.5 and abs(float(c.mean()) - 1.25) < 0.005
    p = draw("noise", b=20000)
    assert 0 <= float(p["sigma"].min()) and float(p["sigma"].max()) < 0.01
    assert abs(float(p["sigma"].mean()) - 0.005) < 0.0002
    z = draw("noise", b=64)["noise"]
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01


# ----------------------------------------------------------------------------- SpecAugment, shifts, blur


def test_specaugment_equals_the_references_masks():
    op, x = build_op("specaugment"), batch(32)
    p = op.sample(x.shape, gen(1), x.device)
    y = op.apply(x, p).numpy()
    for i in range(32):
        ref = x[i].numpy().copy()
        for s, w in zip(p["f_start"][i].tolist(), p["f_width"][i].tolist()):
            ref[:, s : s + w] = ref.min()  # freq_mask(mask_val='min'), then time_mask
        for s, w in zip(p["t_start"][i].tolist(), p["t_width"][i].tolist()):
            ref[s : s + w, :] = ref.min()
        np.testing.assert_array_equal(y[i], ref)


def test_specaugment_distribution():
    p = draw("specaugment", b=5000)
    for axis, size in (("f", F), ("t", T)):
        w, s = p[f"{axis}_width"], p[f"{axis}_start"]
        assert w.shape == (5000, 2) and (int(w.min()), int(w.max())) == (0, 19)  # int(U(0, 20))
        assert int(s.min()) == 0 and (s + w <= size).all()
        assert int((s + w).max()) == size  # f0 = randint(0, n_bands - bw), inclusive
        assert abs(float(w.float().mean()) - 9.5) < 0.2


@pytest.mark.parametrize("name, axis, hi", [("time_shift", 0, 29), ("freq_shift", 1, 9)])
def test_shifts_equal_np_roll(name, axis, hi):
    op, x = build_op(name), batch(64)
    p = op.sample(x.shape, gen(), x.device)
    y = op.apply(x, p).numpy()
    for i in range(64):
        np.testing.assert_array_equal(y[i], np.roll(x[i].numpy(), int(p["shift"][i]), axis=axis))
    shifts = draw(name, b=5000)["shift"]  # int(U(1, Tshift)) with Tshift = hi + 1
    assert (int(shifts.min()), int(shifts.max())) == (1, hi)
    assert abs(float(shifts.float().mean()) - (1 + hi) / 2) < 0.1 * hi


def test_blur_equals_a_slow_convolution():
    op, x = build_op("blur"), batch(6)
    p = op.sample(x.shape, gen(), x.device)
    y = op.apply(x, p).numpy()

    def kernel(half, sigma):  # cv2.getGaussianKernel(2·half+1, σ)
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
        return k / k.sum()

    for i in range(6):
        (ht, hf), s = p["half"][i].tolist(), float(p["sigma"][i])
        img = np.pad(x[i].double().numpy(), ((ht, ht), (hf, hf)), mode="reflect")  # cv2's BORDER_REFLECT_101
        kt, kf = kernel(ht, s), kernel(hf, s)
        rows = sum(kt[j] * img[j : j + T] for j in range(2 * ht + 1))
        ref = sum(kf[j] * rows[:, j : j + F] for j in range(2 * hf + 1))
        np.testing.assert_allclose(y[i], ref, atol=1e-5)
    half = draw("blur", b=5000)["half"]
    assert (int(half.min()), int(half.max())) == (0, 3)  # kernel sizes 1, 3, 5, 7 per axis


def test_blur_of_a_constant_is_the_constant():
    x = torch.full((3, T, F), -4.0)
    torch.testing.assert_close(build_op("blur")(x, gen()), x)


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name, params, words", [
    ("rrc", {"scale_min": 0.9, "scale_max": 0.8}, ["scale_min", "scale_max"]),
    ("noise", {"sigma": 0.1}, ["'sigma'", "sigma_max"]),
    ("noise", {"sigma_max": -1}, ["noise.sigma_max", "allowed range [0.0, 10.0]"]),
    ("specaugment", {"freq_masks": 1.5}, ["specaugment.freq_masks", "integer"]),
    ("time_reversal", {"p": 2}, ["time_reversal.p", "[0.0, 1.0]"]),
    ("blur", {"kernel_max": 4}, ["blur.kernel_max", "odd"]),
    ("warp", {}, ["'warp'", "rrc", "time_shift", "blur"]),
])
def test_parameter_validation_names_the_parameter(name, params, words):
    with pytest.raises(ValueError) as err:
        validate_op_params(name, params)
    for word in words:
        assert word in str(err.value)


def test_defaults_are_the_references():
    assert validate_op_params("rrc", {}) == {"scale_min": 0.8, "scale_max": 1.0, "ratio_min": 0.75,
                                             "ratio_max": 4 / 3, "tries": 10, "p": 1.0}
    assert validate_op_params("compression", {"alpha": 2}) == {"alpha": 2.0, "p": 1.0}  # completed, coerced
    assert validate_op_params("compression", {})["alpha"] == 0.75
    assert validate_op_params("noise", {})["sigma_max"] == 0.01
    assert validate_op_params("specaugment", {}) == {"freq_masks": 2, "freq_width": 20, "time_masks": 2,
                                                     "time_width": 20, "p": 1.0}
    assert validate_op_params("time_shift", {})["max_shift"] == 29
    assert validate_op_params("freq_shift", {})["max_shift"] == 9
    assert validate_op_params("time_reversal", {})["p"] == 0.5
    assert math.isclose(validate_op_params("blur", {})["sigma_max"], 2.0)
