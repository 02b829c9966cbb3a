"""Encoders and head: exact parameter counts (the reference code's), shapes, widths."""

import pytest
import torch

from uclser_tune.models import ENCODERS, Classifier, ContrastiveModel, ProjectionHead, build_encoder


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_reference():
    assert n_params(Classifier(build_encoder("vgg_like"), 20)) == 290_292
    assert n_params(Classifier(build_encoder("crnn"), 20)) == 948_116
    resnet = build_encoder("resnet18")
    # torchvision's ResNet-18 (11,176,512 without fc) with a 1-channel 7×7 conv1: 11.17 M; 11.18 M with Linear(512, 20)
    assert n_params(resnet) == 11_170_240
    assert round(n_params(Classifier(resnet, 20)) / 1e6, 2) == 11.18


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("width", [1.0, 0.25])
@pytest.mark.parametrize("b", [1, 2, 8])
def test_shapes(name, width, b):
    enc = build_encoder(name, width).eval()
    h = enc(torch.randn(b, 1, 101, 96))
    assert h.shape == (b, enc.embed_dim)
    assert enc.embed_dim == {"resnet18": round(512 * width), "vgg_like": 512, "crnn": round(64 * width)}[name]


def test_crnn_sequence_is_12_by_256():
    enc = build_encoder("crnn")
    feats = enc.features(torch.randn(2, 1, 101, 96))
    assert feats.permute(0, 2, 1, 3).flatten(2).shape == (2, 12, 256)


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step from PyTorch's documented equations (gates r, z, n in that order)."""
    r_i, z_i, n_i = (w_ih @ x + b_ih).chunk(3)
    r_h, z_h, n_h = (w_hh @ h + b_hh).chunk(3)
    r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


def test_crnn_h_is_the_references_last_step_product():
    """The reference: out, _ = rnn(x.permute(0, 2, 3, 1).reshape(B, T', -1)); h = out[:, -1, :64] * out[:, -1, 64:].
    Here the sequence is built element by element and the bidirectional GRU run step by step from its
    weights: the last forward output has read the whole sequence, the last backward output only the
    last step."""
    enc = build_encoder("crnn").eval()
    x = torch.randn(2, 1, 101, 96)
    with torch.no_grad():
        feats = enc.features(x).double()
        b, c, t, f = feats.shape
        seq = torch.zeros(b, t, f * c, dtype=torch.float64)
        for ti in range(t):
            for fi in range(f):
                for ci in range(c):
                    seq[:, ti, fi * c + ci] = feats[:, ci, ti, fi]  # feature index: mel bin major, channel minor
        w = {k: v.double() for k, v in enc.gru.named_parameters()}
        expected = []
        for bi in range(b):
            h_fwd = torch.zeros(64, dtype=torch.float64)
            for ti in range(t):
                h_fwd = gru_cell(seq[bi, ti], h_fwd, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"])
            h_bwd = gru_cell(seq[bi, t - 1], torch.zeros(64, dtype=torch.float64), w["weight_ih_l0_reverse"],
                             w["weight_hh_l0_reverse"], w["bias_ih_l0_reverse"], w["bias_hh_l0_reverse"])
            expected.append(h_fwd * h_bwd)
        got = enc(x)
    assert (t, f * c) == (12, 256)
    torch.testing.assert_close(got.double(), torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_head_and_model():
    enc = build_encoder("vgg_like", 0.25)
    model = ContrastiveModel(enc, ProjectionHead(enc.embed_dim, 64, 32)).eval()
    x = torch.randn(3, 1, 101, 96)
    h, z = model(x)
    assert h.shape == (3, 512) and z.shape == (3, 32)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(model(x)[1], z)  # eval mode is deterministic


def test_unknown_encoder_and_bad_width():
    with pytest.raises(ValueError, match="vgg_like"):
        build_encoder("vgg")
    with pytest.raises(ValueError, match="width"):
        build_encoder("crnn", 0)


def test_channels_last_runs():
    enc = build_encoder("resnet18", 0.25).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 101, 96).contiguous(memory_format=torch.channels_last)
    assert enc(x).shape == (2, 128)
