"""Which regression columns the adjusted-effects OLS keeps (``stats._estimable``) and which it reports as
aliased: checked against a slow reference that projects each candidate on the columns kept before it,
and on terms that share their labels (the comparison of terms holding numpy arrays)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from analysis.load import Experiment


def term(name: str, x, level: str = "on", reference: str = "off") -> stats.Term:
    x = np.asarray(x, dtype=float)
    return stats.Term(name, level, reference, x, int((x != 0).sum()), int((x == 0).sum()))


def kept_by_projection(candidates: list[stats.Term], n: int) -> list[int]:
    """Slow reference: a candidate is kept when its column leaves a residual after least squares on the
    intercept and the columns kept before it (it is not in their span); none when residual df < 3."""
    basis, kept = [np.ones(n)], []
    for i, t in enumerate(candidates):
        A = np.column_stack(basis)
        coef = np.linalg.lstsq(A, t.x, rcond=None)[0]
        if np.linalg.norm(t.x - A @ coef) > 1e-8 * max(1.0, np.linalg.norm(t.x)):
            basis.append(t.x)
            kept.append(i)
    return kept if n - len(basis) >= stats.MIN_RESID_DF else []


@pytest.mark.parametrize("seed", range(6))
def test_estimable_keeps_what_the_projection_reference_keeps(seed):
    rng = np.random.default_rng(seed)
    n = 16
    cols = [rng.integers(0, 2, n).astype(float) for _ in range(5)]
    cols.insert(2, cols[0].copy())  # the same column again: fixed by the first
    cols.insert(4, 1.0 - cols[1])  # a complement: fixed by the intercept and the second
    cols.append(cols[0] + cols[3] - cols[1])  # a sum of kept columns
    candidates = [term(f"op:{i}", c) for i, c in enumerate(cols)]
    got = stats._estimable(candidates, n)
    want = kept_by_projection(candidates, n)
    assert [candidates.index(t) for t in got] == want
    assert 2 not in want and 4 not in want and len(cols) - 1 not in want


def test_too_few_residual_df_keep_nothing():
    x = np.eye(5)[:, :3].sum(axis=1)  # n=5: intercept + 2 columns leave 2 residual df
    candidates = [term("a", x), term("b", np.arange(5) % 2)]
    assert stats._estimable(candidates, 5) == [] == kept_by_projection(candidates, 5)


def test_terms_compare_by_their_columns():
    a = term("op:rrc", [1, 0, 1, 0])
    assert a == term("op:rrc", [1, 0, 1, 0])  # same labels, same column: the same term
    assert a != term("op:rrc", [0, 1, 0, 1])  # same labels, another column: another term
    assert a != term("op:noise", [1, 0, 1, 0])
    assert [t for t in [a, term("op:rrc", [1, 1, 0, 0])] if t not in [a]] == [term("op:rrc", [1, 1, 0, 0])]


def test_an_aliased_term_that_shares_its_labels_is_named_and_the_rest_estimated(monkeypatch):
    """Two columns under one label (e.g. a categorical level and an op that share a name), the second
    fixed by the first and the intercept: it is left out and named as aliased, the others are estimated."""
    rng = np.random.default_rng(3)
    n = 24
    a = np.tile([1.0, 0.0], n // 2)
    b = np.repeat([1.0, 0.0], n // 2)
    c = rng.integers(0, 2, n).astype(float)
    y = 0.5 + 0.1 * a - 0.05 * b + rng.normal(0, 0.01, n)
    crafted = [term("x", a), term("x", 1.0 - a), term("y", b), term("z", c)]
    monkeypatch.setattr(stats, "terms", lambda exp, part: crafted)
    table = pd.DataFrame({"optuna_number": range(n), "status": "COMPLETE", "knn_e2": y})
    exp = Experiment(Path("x"), {}, {"sampler": "random"}, table, None, 2, [2], None, "test")
    rows = pd.DataFrame(stats._regression(exp, table, "knn_e2", "epoch 2"))
    read = rows.dropna(subset=["estimate"])
    assert sorted(read["factor"]) == ["x", "y", "z"]
    assert read["method"].str.contains("ALIASED: x left out").all()
    X = np.column_stack([np.ones(n), a, b, c])
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    assert read.set_index("factor").loc[["x", "y", "z"], "estimate"].to_numpy() == pytest.approx(beta[1:], abs=1e-12)
