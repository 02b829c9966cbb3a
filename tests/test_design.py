"""``sampler: design``: the generator against slow, obviously correct references (Sylvester's Hadamard
entry formula, balance and orthogonality counted in plain loops, Lehmer digits counted by hand), the
cells of a small design decoded through the space, and the design's own analysis recovering a planted
order effect (a small design scored by the surrogate, no Ray)."""

import itertools
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from analysis import stats
from analysis.load import Experiment
from experiments.design_recovery import planted_rows, score
from uclser_tune.config import config_from_dict
from uclser_tune.search import results, surrogate
from uclser_tune.search.design import crossed_size, mixed_design, mixed_runs
from uclser_tune.search.spaces import (
    SpaceError,
    fractional_factorial,
    hadamard,
    lehmer_decode,
    lehmer_encode,
    load_space,
)

OPS = ["rrc", "compression", "noise", "specaugment"]
SPACE = {
    "params": {"views.mixback": {"categorical": [True, False]}},
    "ops": {"candidates": OPS, "use": "search", "order": "lehmer",
            "magnitudes": {"noise": {"sigma_max": {"float": [0.001, 0.1], "log": True}}}},
    "sampler": "design", "replicates": 2, "epochs": 2, "asha": None,
}
TRUTH = {"base": 0.5, "noise_sd": 0.01, "effects": [
    {"when": {"views.mixback": True}, "add": 0.10}, {"when": {"op": "noise"}, "add": -0.05},
    {"when": {"before": ["specaugment", "rrc"]}, "add": 0.06}]}


def slow_hadamard_entry(i: int, j: int) -> int:
    """Sylvester's construction entry by entry: (-1) ** (number of bits that i and j share)."""
    return -1 if (i & j).bit_count() % 2 else 1


def slow_lehmer(order: list[str], items: list[str]) -> list[int]:
    """Digit i: how many of the items not yet placed come before order[i] in ``items``."""
    return [sum(1 for x in items if x not in order[:i] and items.index(x) < items.index(item))
            for i, item in enumerate(order[:-1])]


def counts(rows: list[tuple]) -> dict:
    out: dict = {}
    for r in rows:
        out[r] = out.get(r, 0) + 1
    return out


@pytest.mark.parametrize("runs", [1, 2, 8, 16, 32])
def test_hadamard_is_sylvesters_entry_by_entry(runs):
    h = hadamard(runs)
    assert [[int(h[i][j]) for j in range(runs)] for i in range(runs)] == \
        [[slow_hadamard_entry(i, j) for j in range(runs)] for i in range(runs)]


@pytest.mark.parametrize("k, seed", [(3, 0), (5, 1), (7, 2), (10, 3), (15, 4)])
def test_fractional_factorial_is_balanced_orthogonal_and_resolution_iv(k, seed):
    design = fractional_factorial(k, np.random.default_rng(seed)).tolist()
    n = len(design)
    assert n == min(2 ** k, 2 * (8 if k < 8 else 16))  # the full factorial when it is no larger
    assert len({tuple(r) for r in design}) == n  # no point twice
    for a in range(k):  # balance: every factor at each level in half of the runs
        assert counts([(r[a],) for r in design]) == {(-1,): n // 2, (1,): n // 2}
    for a, b in itertools.combinations(range(k), 2):  # strength 2: every pair in all 4 combinations equally
        assert counts([(r[a], r[b]) for r in design]) == {c: n // 4 for c in itertools.product([-1, 1], repeat=2)}
    for a, b, c in itertools.product(range(k), repeat=3):  # resolution IV: no main effect aliased with a 2fi
        if b < c and a not in (b, c):
            assert sum(r[a] * r[b] * r[c] for r in design) == 0, (a, b, c)


def test_lehmer_encode_is_the_inverse_of_decode_and_the_slow_count():
    items = ["a", "b", "c", "d", "e"]
    for perm in itertools.permutations(items):
        digits = lehmer_encode(list(perm), items)
        assert digits == slow_lehmer(list(perm), items)
        assert lehmer_decode(digits, items) == list(perm)


def small_space(tmp_path: Path, **changes):
    (tmp_path / "design.yaml").write_text(yaml.safe_dump({**SPACE, **changes}))
    return load_space(tmp_path / "design.yaml")


def test_design_cells_are_balanced_replicated_and_decode_to_their_orders(tmp_path):
    space = small_space(tmp_path)
    cells = space.design_cells(seed=0)
    assert len(cells) == space.grid_size() == 8 * 2 * 2  # 5 factors: 8 runs, folded over, 2 replicates
    assert cells != space.design_cells(seed=1) and cells == space.design_cells(seed=0)
    factors = ["views.mixback", *(f"use_{op}" for op in OPS)]
    for f in factors:
        assert counts([(c[f],) for c in cells]) == {(True,): 16, (False,): 16}
    for f, g in itertools.combinations(factors, 2):
        assert set(counts([(c[f], c[g]) for c in cells]).values()) == {8}
    assert counts([(c["replicate"],) for c in cells]) == {(0,): 16, (1,): 16}
    configs = []
    for c in cells:
        cfg = space.config_for({**c, "noise_sigma_max": 0.01})
        order = lehmer_decode([c[f"order_d{i}"] for i in range(len(OPS) - 1)], OPS)
        assert cfg.views.ops == [op for op in order if c[f"use_{op}"]] and cfg.seed == c["replicate"]
        configs.append((tuple(c[f] for f in factors), c["replicate"], tuple(order)))
    # the second replicate of a point runs the reverse order of the first: every pair's two orders equally
    # often at every design point
    by_point = {}
    for point, rep, order in configs:
        by_point.setdefault(point, {})[rep] = order
    assert len(by_point) == 16 and all(v[1] == v[0][::-1] for v in by_point.values())


def test_design_space_errors(tmp_path):
    with pytest.raises(SpaceError, match="replicates: only a 'sampler: design' space"):
        small_space(tmp_path, sampler="tpe")
    with pytest.raises(SpaceError, match="replicates: got 0"):
        small_space(tmp_path, replicates=0)
    with pytest.raises(SpaceError, match="not variants"):
        small_space(tmp_path, variants={"a": {"train.tau": 0.1}})


def design_experiment(tmp_path: Path, truth: dict, seed: int = 0) -> Experiment:
    """Every cell of the small design asked through an in-memory study and scored by the surrogate at
    its last epoch: the table ``analysis`` reads (``results._summary`` columns, ``param_*``)."""
    space = small_space(tmp_path)
    (tmp_path / "truth.yaml").write_text(yaml.safe_dump(truth))
    t = surrogate.load_truth(tmp_path / "truth.yaml")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    rows = []
    for cell in space.design_cells(seed):
        study.enqueue_trial(cell)
        trial = study.ask()
        cfg = config_from_dict(space.define_by_run(trial)["run_config"])
        value = surrogate.score(t, cfg, 2, 2, cfg.seed)
        study.tell(trial, value)
        rows.append({"optuna_number": trial.number, "status": "COMPLETE", **results._summary(cfg),
                     **{f"param_{k}": v for k, v in trial.params.items()}, "knn_e2": value})
    return Experiment(tmp_path, {}, {"sampler": "design"}, pd.DataFrame(rows), study, 2, [2], None, "test")


def test_the_designs_model_recovers_a_planted_order_effect(tmp_path):
    exp = design_experiment(tmp_path, TRUTH)
    rows = stats.effects_adjusted(exp)
    by = rows.set_index(["factor", "level"])
    order = by.loc[("order:rrc,specaugment", "rrc before specaugment")]  # the truth: specaugment before rrc
    assert order.p_holm < 0.05 and order.ci_low < -0.06 < order.ci_high
    assert (order.n_level, order.n_reference) == (4, 4)  # both on in 8 trials, each order in half
    assert "each order:a,b row" in order.method and "replicate a block" in order.method
    assert ("replicate", "1") not in by.index  # a block: in the model, no row
    verdict = score(rows, surrogate.load_truth(tmp_path / "truth.yaml"), OPS)
    assert verdict["ok"] and not verdict["missed"] and not verdict["null_significant"], verdict
    want, _ = planted_rows(surrogate.load_truth(tmp_path / "truth.yaml"), OPS)
    assert want[("order:rrc,specaugment", "rrc before specaugment")] == -1


def test_the_rows_are_the_explicit_design_matrix_fits(tmp_path):
    """On/off rows: one OLS on 1 + replicate + ops + mix-back + the noise magnitude; each order row: that
    matrix plus its pair's column (+1/2 a first, -1/2 b first, 0 unless both on), solved by lstsq."""
    exp = design_experiment(tmp_path, TRUTH)
    t = exp.table
    y = t["knn_e2"].to_numpy()
    cols = {f"op:{op}": (t[f"pos_{op}"] > 0).to_numpy(float) for op in OPS}
    cols["mixback"] = t["mixback"].to_numpy(float)
    on = t["pos_noise"].to_numpy() > 0
    mag = np.where(on, np.log10(t["param_noise_sigma_max"].fillna(1.0)), 0.0)
    mag[on] -= mag[on].mean()
    cols["noise_sigma_max"] = mag
    X = np.column_stack([np.ones(len(y)), (t["param_replicate"] == 1).to_numpy(float), *cols.values()])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    got = {r.factor: r.estimate for r in stats.effects_adjusted(exp).itertuples()}
    for i, name in enumerate(cols, start=2):
        assert got[name] == pytest.approx(beta[i], abs=1e-10), name
    for a, b in itertools.combinations(OPS, 2):
        pa, pb = t[f"pos_{a}"].to_numpy(), t[f"pos_{b}"].to_numpy()
        pair = np.where((pa > 0) & (pb > 0), np.where(pa < pb, 0.5, -0.5), 0.0)
        beta, *_ = np.linalg.lstsq(np.column_stack([X, pair]), y, rcond=None)
        assert got[f"order:{a},{b}"] == pytest.approx(beta[-1], abs=1e-10), (a, b)
    assert "replicate" not in got


# ---------------------------------------------------------------- categoricals with more than two choices

def slow_balance(two: list[list[int]], cats: list[list[int]], levels: list[int]) -> None:
    """Counted in plain loops: every choice of a categorical equally often, at each level of every
    two-level factor equally often, every pair of categoricals in every combination equally often, every
    pair of two-level factors in all four, and no two-level main effect aliased with a two-level 2fi."""
    n, k = len(two), len(two[0]) if two else 0
    for j, m in enumerate(levels):
        assert counts([(r[j],) for r in cats]) == {(lvl,): n // m for lvl in range(m)}
        for a in range(k):
            assert counts([(c[j], t[a]) for c, t in zip(cats, two)]) == {
                (lvl, s): n // (2 * m) for lvl in range(m) for s in (-1, 1)}
    for i, j in itertools.combinations(range(len(levels)), 2):
        assert counts([(r[i], r[j]) for r in cats]) == {
            (a, b): n // (levels[i] * levels[j]) for a in range(levels[i]) for b in range(levels[j])}
    for a, b in itertools.combinations(range(k), 2):
        assert counts([(r[a], r[b]) for r in two]) == {c: n // 4 for c in itertools.product([-1, 1], repeat=2)}
    for a, b, c in itertools.product(range(k), repeat=3):
        if b < c and a not in (b, c):
            assert sum(r[a] * r[b] * r[c] for r in two) == 0, (a, b, c)


@pytest.mark.parametrize("k, levels, seed", [(10, [4], 0), (5, [4], 1), (4, [4], 2), (3, [4, 4], 3), (6, [8], 4),
                                              (5, [4, 8], 5), (0, [4, 4, 4], 6)])
def test_mixed_design_is_balanced_by_the_slow_count(k, levels, seed):
    two, cats = mixed_design(k, levels, np.random.default_rng(seed))
    assert len(two) == len(cats) == 2 * mixed_runs(k, levels)
    slow_balance(two.tolist() if k else [[] for _ in cats], cats.tolist(), levels)


def test_a_four_choice_categorical_is_built_into_the_array_not_crossed(tmp_path):
    space = small_space(tmp_path, params={**SPACE["params"], "train.batch_size": {"categorical": [16, 32, 64, 128]}})
    assert list(space.embedded_categoricals()) == ["train.batch_size"]
    cells = space.design_cells(seed=0)
    # 5 two-level factors and 3 columns for the categorical: 16 runs, folded over, 2 replicates; the cross
    # would be 16 x 4 points
    assert len(cells) == space.grid_size() == 16 * 2 * 2 < crossed_size(5, [4]) * 2
    assert cells == space.design_cells(seed=0) and cells != space.design_cells(seed=1)
    factors = ["views.mixback", *(f"use_{op}" for op in OPS)]
    points = [c for c in cells if c["replicate"] == 0]
    two = [[1 if c[f] is True else -1 for f in factors] for c in points]
    choices = [16, 32, 64, 128]
    slow_balance(two, [[choices.index(c["train.batch_size"])] for c in points], [4])
    for c in cells[:4]:
        assert space.config_for({**c, "noise_sigma_max": 0.01}).train.batch_size == c["train.batch_size"]


def test_a_three_choice_categorical_is_crossed(tmp_path):
    space = small_space(tmp_path, params={**SPACE["params"], "train.tau": {"categorical": [0.1, 0.2, 0.5]}})
    assert space.embedded_categoricals() == {}
    points = space.design_points(seed=0)
    factors = ["views.mixback", *(f"use_{op}" for op in OPS)]
    assert len(points) == 16 * 3  # every run of the two-level array with every choice
    by_run = {}
    for p in points:
        by_run.setdefault(tuple(p[f] for f in factors), []).append(p["train.tau"])
    assert len(by_run) == 16 and all(sorted(v) == [0.1, 0.2, 0.5] for v in by_run.values())


def test_a_space_without_such_categoricals_keeps_the_designs_it_ran():
    """``augs_design.yaml`` has only two-level factors: its cells are still those of the committed
    design-recovery searches (each trial's params as enqueued; a conditional param not asked is absent)."""
    space = load_space("augs_design.yaml")
    for seed in (0, 3):
        table = pd.read_parquet(Path(__file__).resolve().parents[1] / "results" / "design_order" / f"seed{seed}"
                                / "trials.parquet").sort_values("optuna_number")
        cells = space.design_cells(seed)
        assert len(cells) == len(table)
        for cell, (_, row) in zip(cells, table.iterrows()):
            asked = {k: v for k, v in cell.items() if row[f"param_{k}"] is not None and not pd.isna(row[f"param_{k}"])}
            assert {k: row[f"param_{k}"] for k in asked} == asked
