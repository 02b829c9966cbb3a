"""The exact McNemar test of experiments.planted_recovery against the binomial sum written out."""

from math import comb

import pandas as pd
import pytest

from experiments.planted_recovery import mcnemar_exact


def test_mcnemar_is_the_two_sided_binomial_of_the_discordant_pairs():
    a = pd.Series([True] * 7 + [False] + [True] * 11 + [False])  # 7 only a, 1 only b, 11 both, 1 neither
    b = pd.Series([False] * 7 + [True] + [True] * 11 + [False])
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (7, 1)
    assert p == pytest.approx(2 * sum(comb(8, k) for k in (0, 1)) / 2 ** 8)  # 0.0703
    assert mcnemar_exact(pd.Series([True, False]), pd.Series([True, False]))[2] == 1.0  # no discordant pair
