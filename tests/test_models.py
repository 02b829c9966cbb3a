"""Encoders and head: exact parameter counts (SPEC §3), shapes, widths."""

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


def test_crnn_h_is_the_references_last_step_product():
    """The reference: out, _ = rnn(x.permute(0, 2, 3, 1).reshape(B, T', -1)); h = out[:, -1, :64] * out[:, -1, 64:]."""
    enc = build_encoder("crnn").eval()
    x = torch.randn(2, 1, 101, 96)
    feats = enc.features(x)
    b, c, t, f = feats.shape
    out, h_n = enc.gru(feats.permute(0, 2, 3, 1).reshape(b, t, f * c))
    expected = out[:, -1].view(b, 2, 64)
    torch.testing.assert_close(enc(x), expected[:, 0] * expected[:, 1])
    assert not torch.allclose(enc(x), h_n[0] * h_n[1])  # not the final backward state


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
