"""NT-Xent against a line-by-line NumPy transcription of SimCLR's Algorithm 1."""

import numpy as np
import pytest
import torch

from uclser_tune.losses import nt_xent


def simclr_algorithm_1(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """l(i, j) = -log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ); L = 1/2N Σ_k [l(2k-1, 2k) + l(2k, 2k-1)]."""
    n = len(z1)
    z = []
    for k in range(n):  # interleave as in the paper: 2k-1 → view 1, 2k → view 2
        z.append(z1[k] / np.linalg.norm(z1[k]))
        z.append(z2[k] / np.linalg.norm(z2[k]))

    def s(i, j):
        return float(np.dot(z[i], z[j]))

    def loss(i, j):
        denom = sum(np.exp(s(i, k) / tau) for k in range(2 * n) if k != i)
        return -np.log(np.exp(s(i, j) / tau) / denom)

    return sum(loss(2 * k, 2 * k + 1) + loss(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 8, 32])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.2, 0.5, 1.0])
def test_equals_algorithm_1(n, tau):
    rng = np.random.default_rng(n)
    z1, z2 = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
    got = nt_xent(torch.from_numpy(z1).float(), torch.from_numpy(z2).float(), tau).item()
    assert got == pytest.approx(simclr_algorithm_1(z1, z2, tau), rel=1e-4, abs=1e-5)


def test_symmetric_and_finite_gradients():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g)
    loss = nt_xent(z1, z2, 0.2)
    assert loss.item() == pytest.approx(nt_xent(z2, z1, 0.2).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(z1.grad).all()


def test_low_precision_inputs_and_validation():
    z = torch.randn(8, 4)
    assert torch.isfinite(nt_xent(z.bfloat16(), z.flip(0).bfloat16(), 0.05))
    with pytest.raises(ValueError, match="tau"):
        nt_xent(z, z, 0.0)
    with pytest.raises(ValueError, match="shape|N, D"):
        nt_xent(z, z[:4], 0.2)
