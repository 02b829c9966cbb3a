"""The sensitivity analysis (``python -m analysis``) on a real smoke search (the session's shared one,
conftest.py; Ray on 127.0.0.5) and on a hand-made paper_ablations-like experiment whose numbers are
known, so tables are checked exactly."""

import json
import os
import shutil
import sys

import children
import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from scipy import stats as scipy_stats

from analysis import effects, importance, paper_tables, plots, stats
from analysis.__main__ import main
from analysis.importance import importances
from analysis.load import asha_rungs, load_experiment
from analysis.run import analyse
from uclser_tune.config import OP_NAMES as OPS

PNGS = ["importance.png", "parallel.png", "best_so_far.png", "rung_survival.png", "positions.png",
        "config_effects.png", "knn_curves.png"]
CSVS = ["effects_adjusted.csv", "importance.csv", "rung_survival.csv", "effects.csv"]


# ---------------------------------------------------------------- a real smoke search (about a minute)

@pytest.fixture(scope="module")
def real_exp(smoke_search):
    """The session's shared smoke search (conftest.py: 6 trials, sampler seed 0, so mix-back varies)."""
    return smoke_search.exp


@pytest.fixture(scope="module")
def real_out(real_exp, tmp_path_factory):
    """The CLI as a user runs it, into --out."""
    out_dir = tmp_path_factory.mktemp("analysis_out")
    proc = children.run([sys.executable, "-m", "analysis", str(real_exp), "--out", str(out_dir)], 300,
                        "the analysis CLI")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parameter importance" in proc.stderr and proc.stdout.strip() == str(out_dir / "report.md")
    return out_dir


@pytest.mark.slow
def test_real_search_every_output_exists_and_report_links_it(real_out):
    for name in [*PNGS, *CSVS, "report.md"]:
        assert (real_out / name).stat().st_size > 0, name
    report = (real_out / "report.md").read_text()
    for name in PNGS:
        assert f"]({name})" in report, name
    for name in CSVS[1:]:
        assert f"[{name}]({name})" in report
    assert "best val kNN balanced accuracy at the final rung" in report
    assert "ASHA rungs e1, e2, e4" in report and "PRUNED" in report
    assert "raw means" in report and "(n=" in report  # reading lines generated from the numbers
    assert "ASHA rung survival" in report
    assert "adjusted effects: no scope has enough trials for an interval" in report  # and no forest plot
    assert not (real_out / "effects_adjusted.png").exists()
    adjusted = pd.read_csv(real_out / "effects_adjusted.csv")
    assert list(adjusted.columns) == ["factor", "level", "reference", "estimate", "ci_low", "ci_high", "p_holm",
                                      "n_level", "n_reference", "scope", "method"]
    # 6 trials cannot carry a regression over the smoke space's factors: said, not estimated
    assert adjusted.estimate.isna().all() and adjusted.method.str.contains("n too small to read").all()


@pytest.mark.slow
def test_real_search_raw_means_are_per_rung_never_pooled_across_epochs(real_exp, real_out):
    table = pd.read_parquet(real_exp / "trials.parquet")
    csv = pd.read_csv(real_out / "effects.csv")
    assert set(csv.metric) <= {"knn_e1", "knn_e2", "knn_e4"}  # no last_knn: it mixes epochs
    checked = 0
    for metric in ["knn_e1", "knn_e2", "knn_e4"]:
        for op in OPS:
            if table[f"pos_{op}"].gt(0).nunique() < 2:
                assert f"op:{op}" not in set(csv.factor)  # an op that never varies has no row
                continue
            for level, part in [("on", table[table[f"pos_{op}"] > 0]), ("off", table[table[f"pos_{op}"] == 0])]:
                values = part[metric].dropna()
                rows = csv[(csv.factor == f"op:{op}") & (csv.metric == metric) & (csv.level == level)]
                if values.empty:
                    assert rows.empty
                    continue
                assert rows.iloc[0]["n"] == len(values)
                assert rows.iloc[0]["mean"] == pytest.approx(values.mean(), rel=1e-12)
                checked += 1
    assert checked >= 4


@pytest.mark.slow
def test_real_search_importance_per_rung_counts_pruned_trials(real_exp, real_out):
    imp = pd.read_csv(real_out / "importance.csv")
    table = pd.read_parquet(real_exp / "trials.parquet")
    first = imp[imp.rung == "e1"]
    assert set(first.evaluator) == {"fanova", "ped_anova"}
    assert (first.n_trials == table.knn_e1.notna().sum()).all()  # pruned trials included
    assert (first.n_trials > (table.status == "COMPLETE").sum()).all()
    assert {"train.tau", "views.sampling", "use_noise"} <= set(first.param)
    assert not any(p.startswith("order_d") for p in imp.param)  # order is read as op positions
    fanova = first[first.evaluator == "fanova"].set_index("param")
    assert fanova.importance.sum() == pytest.approx(1.0) and (fanova.importance.dropna() >= 0).all()
    # fANOVA only assesses what every trial suggested: the conditional ones are n/a, not zero (mix-back
    # varies over these trials: the shared search checks it, so mixback_alpha is missing from some)
    assert table.mixback.nunique() == 2
    assert pd.isna(fanova.loc["views.mixback_alpha", "importance"])
    assert fanova.loc["views.mixback_alpha", "note"].startswith("n/a: not in every trial")
    # 6 trials: PED-ANOVA's top 10 % holds one, fewer than the 5 it needs, so it is not run
    ped = first[first.evaluator == "ped_anova"]
    assert ped.importance.isna().all() and ped.note.str.contains("fewer than 5").all()
    report = (real_out / "report.md").read_text()
    assert "PED-ANOVA not run: its top 10% holds 1 trial(s), fewer than 5" in report
    for rung in ("e2", "e4"):
        n = int(table[f"knn_e{rung[1:]}"].notna().sum())
        if n < 4:
            assert f"rung {rung}: {n} trial(s) with a value, fewer than 4" in report


@pytest.mark.slow
def test_running_experiment_is_rebuilt_from_trial_dirs(real_exp, tmp_path):
    exp_dir = tmp_path / real_exp.name
    shutil.copytree(real_exp, exp_dir, ignore=shutil.ignore_patterns("checkpoint_*", "analysis"))
    os.utime(exp_dir / "trials.parquet", (0, 0))  # older than every result.json: stale
    assert load_experiment(exp_dir).table_source == "rebuilt from trial dirs"
    (exp_dir / "trials.parquet").unlink()
    (exp_dir / "trials.csv").unlink()
    assert main([str(exp_dir)]) == 0
    report = (exp_dir / "analysis" / "report.md").read_text()
    assert "rebuilt from trial dirs" in report and (exp_dir / "analysis" / "knn_curves.png").stat().st_size


# ---------------------------------------------------------------- a hand-made paper_ablations experiment

VARIANTS = ["default", "same", "sep_25", "mixback_unadjusted", "mixback_none", "da_rrc", "da_none",
            "da_specaugment"]
# variant, seed, tau, batch, knn per epoch (2 epochs), status
TRIALS = [("default", 0, 0.1, 64, [0.50, 0.60], "COMPLETE"),
          ("default", 1, 0.1, 128, [0.52, 0.62], "COMPLETE"),
          ("default", 2, 0.5, 64, [0.48, 0.58], "COMPLETE"),
          ("same", 0, 0.5, 128, [0.40, 0.50], "COMPLETE"),
          ("same", 1, 0.1, 64, [0.44, 0.54], "COMPLETE"), ("sep_25", 0, 0.5, 64, [0.45, 0.55], "COMPLETE"),
          ("mixback_unadjusted", 0, 0.1, 128, [0.47, 0.57], "COMPLETE"),
          ("mixback_unadjusted", 1, 0.5, 128, [0.49, 0.59], "COMPLETE"),
          ("mixback_none", 0, 0.1, 64, [0.42, 0.52], "COMPLETE"),
          ("da_rrc", 0, 0.5, 64, [0.35, 0.45], "COMPLETE"), ("da_rrc", 1, 0.1, 128, [0.37, 0.47], "COMPLETE"),
          ("da_none", 0, 0.1, 64, [0.30], "PRUNED"), ("da_specaugment", 0, 0.5, 128, [0.33], "RUNNING")]
DISTRIBUTIONS = {"variant": CategoricalDistribution(VARIANTS), "seed": CategoricalDistribution([0, 1, 2]),
                 "train.tau": FloatDistribution(0.02, 1.0, log=True),
                 "train.batch_size": CategoricalDistribution([64, 128])}


def _row(number, variant, seed, tau, batch, knn, status):
    ops = {"da_rrc": ["rrc"], "da_none": [], "da_specaugment": ["specaugment"]}.get(
        variant, ["rrc", "compression", "noise"])
    mixback = variant != "mixback_none"
    sampling = "separation" if variant.startswith("sep_") else "same" if variant == "same" else "random"
    return {"trial_id": f"t{number}", "optuna_number": number, "status": status, "epochs_run": len(knn),
            "max_epochs": 2, "best_knn": max(knn), "best_epoch": knn.index(max(knn)) + 1, "last_knn": knn[-1],
            "trial_dir": f"trial_t{number}", "encoder": "resnet18", "tau": tau, "batch_size": batch,
            "sampling": sampling, "separation": 25 if sampling == "separation" else 0, "mixback": mixback,
            "mixback_alpha": (0.02 if variant == "mixback_unadjusted" else 0.05) if mixback else 0.0,
            "mixback_energy_adjust": mixback and variant != "mixback_unadjusted", "ops": ">".join(ops),
            "seed": seed, **{f"pos_{op}": ops.index(op) + 1 if op in ops else 0 for op in OPS},
            "param_variant": variant, "param_seed": seed, "param_train.tau": tau,
            "param_train.batch_size": batch,
            **{f"knn_e{e + 1}": v for e, v in enumerate(knn)}, "knn_history": knn}


@pytest.fixture
def hand_exp(tmp_path):
    exp_dir = tmp_path / "ablations"
    exp_dir.mkdir()
    meta = {"space": str(tmp_path / "moved" / "paper_ablations.yaml"), "space_digest": "x",
            "overrides": {"train.epochs": 2, "eval.every": 1}, "storage": "journal:optuna.journal",
            "study_name": "ablations", "sampler_seed": 0, "versions": {}}
    (exp_dir / "search.json").write_text(json.dumps(meta))
    study = optuna.create_study(study_name="ablations", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(exp_dir / "optuna.journal"))))
    study.add_trials([optuna.trial.create_trial(
        params={"variant": v, "seed": s, "train.tau": tau, "train.batch_size": b},
        distributions=DISTRIBUTIONS, value=knn[-1] if status == "COMPLETE" else None,
        state=TrialState[status],
        intermediate_values={e + 1: k for e, k in enumerate(knn)}) for v, s, tau, b, knn, status in TRIALS])
    pd.DataFrame([_row(i, *t) for i, t in enumerate(TRIALS)]).to_parquet(exp_dir / "trials.parquet")
    journal_time = (exp_dir / "optuna.journal").stat().st_mtime
    os.utime(exp_dir / "trials.parquet", (journal_time + 10, journal_time + 10))
    return exp_dir


def row(table, variant, group=None):
    return table[(table.variant == variant) & ((table.group == group) if group else True)].iloc[0]


def test_paper_tables_are_mean_sd_over_complete_seeds(hand_exp):
    report = analyse(hand_exp)
    out = hand_exp / "analysis"
    t1, t2 = pd.read_csv(out / "paper_table1.csv"), pd.read_csv(out / "paper_table2.csv")
    default = row(t1, "default", "patch sampling")
    assert default.n == 3 and default["mean"] == pytest.approx(0.60) and default.sd == pytest.approx(0.02)
    assert default.knn == "0.600 ± 0.020"
    assert row(t1, "default", "mix-back").knn == "0.600 ± 0.020"
    assert row(t1, "same").knn == "0.520 ± 0.028" and row(t1, "sep_25").knn == "0.550"
    assert row(t1, "sep_75").knn == "—" and row(t1, "sep_75").n == 0
    assert row(t1, "mixback_unadjusted").knn == "0.580 ± 0.014" and row(t1, "mixback_none").knn == "0.520"
    assert list(t1.variant[:8]) == ["default", "same", "sep_25", "sep_75", "sep_125", "sep_200", "sep_300",
                                    "sep_400"]
    assert list(t2.setting) == ["rrc > compression > noise (default)", "rrc > compression",
                                "rrc > specaugment", "rrc", "specaugment", "none"]
    assert row(t2, "da_rrc").knn == "0.460 ± 0.014"
    assert row(t2, "da_none").knn == "—" and row(t2, "da_specaugment").knn == "—"  # PRUNED, RUNNING
    assert row(t1, "default").paper == paper_tables.PAPER["default"] == 70.1 and row(t2, "da_none").paper == 60.1
    assert row(t1, "same").knn_best == "0.520 ± 0.028"  # best over epochs: the last epoch here
    md = (out / "paper_table2.md").read_text()
    default_line = next(line for line in md.splitlines() if "rrc > compression > noise (default)" in line)
    # no trials: rrc > compression, rrc > specaugment; not COMPLETE: specaugment, none (best and last)
    assert "0.600 ± 0.020" in default_line and "70.1" in default_line and md.count("—") == 8
    assert paper_tables.COLUMN_PAPER in md and "the reference's metric" in md and "last epoch" in md
    text = report.read_text()
    assert "0.600 ± 0.020" in text and "[paper_table1.csv](paper_table1.csv)" in text
    assert "**partial**: 1 trial(s) still RUNNING" in text
    assert "paper_ablations.yaml (file not found)" in text and "ASHA rungs e2 (no ASHA)" in text


def test_tau_batch_heatmap_cells_are_group_means(hand_exp):
    analyse(hand_exp)
    out = hand_exp / "analysis"
    assert (out / "tau_batch.png").stat().st_size > 0
    cells = pd.read_csv(out / "tau_batch.csv")
    table = pd.read_parquet(hand_exp / "trials.parquet")
    for metric in ["knn_e2"]:
        expected = table.dropna(subset=[metric]).groupby(["tau", "batch_size"])[metric].agg(["mean", "count"])
        got = cells[cells.metric == metric].set_index(["tau_bin", "batch_size"])
        assert len(got) == len(expected) == 4
        for (tau, batch), e in expected.iterrows():
            assert got.loc[(tau, batch), "mean"] == pytest.approx(e["mean"])
            assert got.loc[(tau, batch), "n"] == e["count"]
    assert "best cell τ" in (out / "report.md").read_text()


def test_importance_on_completed_trials_and_rungs(hand_exp):
    rows, skipped = importances(load_experiment(hand_exp))
    assert set(rows.rung) == {"complete", "e2"}
    assert skipped == [f"{s}, PED-ANOVA not run: its top 10% holds 2 trial(s), fewer than 5"
                       for s in ("completed trials", "rung e2")]
    complete = rows[rows.rung == "complete"]
    assert set(complete.evaluator) == {"fanova", "ped_anova"}
    assert set(complete.param) == {"variant", "seed", "train.tau", "train.batch_size"}
    assert (complete.n_trials == 11).all()
    assert complete[complete.evaluator == "ped_anova"].importance.isna().all()  # top 10 %: 2 trials < 5
    # variant is what separates the kNN values here (seeds and tau/batch are noise)
    fanova = complete[complete.evaluator == "fanova"].set_index("param").importance
    assert fanova.idxmax() == "variant"


def test_effects_levels_and_rungs(hand_exp):
    exp = load_experiment(hand_exp)
    assert exp.rungs == [2] and exp.partial and exp.table_source == "trials.parquet"
    rows = effects.effects(effects.observations(exp))
    noise = rows[(rows.factor == "op:noise") & (rows.metric == "knn_e2")].set_index("level")
    table = exp.table
    with_noise = table.loc[table.pos_noise > 0, "knn_e2"].dropna()
    assert noise.loc["on", "mean"] == pytest.approx(with_noise.mean(), rel=1e-12)
    assert noise.loc["on", "n"] == len(with_noise) == 9
    alpha = rows[(rows.factor == "mixback_alpha") & (rows.metric == "knn_e2")]
    assert list(alpha.level) == ["0.02", "0.05"]  # few distinct values: the values themselves, in order
    assert set(rows[rows.factor == "mixback_energy_adjust"].level) == {"adjusted", "unadjusted"}
    assert "encoder" not in set(rows.factor)  # not varied


def test_binning_and_rungs():
    values = pd.Series([0.02, 0.03, 0.1, 0.2, 0.9, 1.0])
    labels = effects.binned(values, log=True, n_bins=2)
    assert list(labels.astype(str)) == ["0.02–0.141"] * 3 + ["0.141–1"] * 3
    sep = effects.numeric_levels(pd.Series([400, 25, 125]))
    assert list(sep.cat.categories) == ["25", "125", "400"]
    assert asha_rungs(1, 2, 4) == [1, 2, 4]
    assert asha_rungs(10, 3, 100) == [10, 30, 90, 100]
    assert asha_rungs(5, 2, 5) == [5]


# ---------------------------------------------------------------- usage errors

def test_cli_exit_2_on_missing_dir_not_an_experiment_and_empty(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main([str(missing)]) == 2
    assert f"{missing}: no such directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert f"{tmp_path}: not an experiment dir (no search.json)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "search.json").write_text(json.dumps({"space": "smoke.yaml", "space_digest": "x", "overrides": {},
                                                   "study_name": "e", "storage": "journal:optuna.journal"}))
    optuna.create_study(study_name="e",
                        storage=JournalStorage(JournalFileBackend(str(empty / "optuna.journal"))))
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {empty}: no trial has reported a kNN accuracy yet"
    assert not (empty / "analysis").exists()


def test_help_names_outputs(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "EXPERIMENT_DIR" in text and "report.md" in text and "--out" in text


# ---------------------------------------------------------------- adjusted effects against hand computations

def test_grid_variants_against_the_default_are_welch_with_holm(hand_exp):
    exp = load_experiment(hand_exp)
    rows = stats.effects_adjusted(exp, paired=False)  # the paired fit: tests/test_analysis_paired.py
    assert set(rows.scope) == {"epoch 2 (final)"} and set(rows.factor) == {"variant"}  # never pooled factors
    assert set(rows.reference) == {"default"}
    table = exp.table.dropna(subset=["knn_e2"])
    ref = table.loc[table.param_variant == "default", "knn_e2"].to_numpy()
    raw = {}
    for v in ["same", "mixback_unadjusted", "da_rrc"]:  # two seeds or more: an interval
        a = table.loc[table.param_variant == v, "knn_e2"].to_numpy()
        va, vb = a.var(ddof=1) / len(a), ref.var(ddof=1) / len(ref)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(ref) - 1))  # Welch-Satterthwaite
        half = scipy_stats.t.ppf(0.975, df) * np.sqrt(va + vb)
        diff = a.mean() - ref.mean()
        raw[v] = 2 * scipy_stats.t.sf(abs(diff) / np.sqrt(va + vb), df)
        r = rows.set_index("level").loc[v]
        assert r.estimate == pytest.approx(diff) and (r.n_level, r.n_reference) == (len(a), 3)
        assert (r.ci_low, r.ci_high) == pytest.approx((diff - half, diff + half))
    ordered = sorted(raw, key=raw.get)  # Holm by hand over the 3 testable variants
    expected = np.maximum.accumulate([min(1, (3 - i) * raw[v]) for i, v in enumerate(ordered)])
    for v, p in zip(ordered, expected):
        assert rows.set_index("level").loc[v, "p_holm"] == pytest.approx(p)
    one_seed = rows.set_index("level").loc["sep_25"]  # n=1: an estimate, no interval, and it says so
    assert np.isnan(one_seed.ci_low) and "n too small to read" in one_seed.method


TPE_OPS = ["rrc", "noise", "specaugment"]


@pytest.fixture
def tpe_exp(tmp_path):
    """A TPE-like experiment: ops and mix-back sampled together (confounded), kNN = a known linear truth
    plus fixed noise, ASHA rungs e1 (all 20 trials) and e2 (5 promoted)."""
    exp_dir = tmp_path / "tpe"
    exp_dir.mkdir()
    (exp_dir / "search.json").write_text(json.dumps({
        "space": str(tmp_path / "gone.yaml"), "space_digest": "x", "overrides": {"train.epochs": 2},
        "storage": "journal:optuna.journal", "study_name": "tpe", "asha": {"grace_period": 1, "reduction_factor": 2}}))
    rng = np.random.default_rng(3)
    dists = {**{f"use_{op}": CategoricalDistribution([True, False]) for op in TPE_OPS},
             "views.mixback": CategoricalDistribution([True, False]),
             "views.mixback_alpha": FloatDistribution(0.01, 0.2, log=True)}
    study = optuna.create_study(study_name="tpe", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(exp_dir / "optuna.journal"))))
    rows, trials = [], []
    for i in range(20):
        use = {op: bool(rng.random() < (0.8 if op == "rrc" else 0.5)) for op in TPE_OPS}
        mixback = use["noise"] if rng.random() < 0.75 else not use["noise"]  # confounded with noise
        alpha = float(rng.uniform(0.02, 0.15)) if mixback else 0.0
        knn1 = 0.4 + 0.1 * mixback - 0.05 * use["noise"] + 0.02 * use["rrc"] + rng.normal(0, 0.01)
        knn = [knn1, knn1 + 0.1] if i < 5 else [knn1]
        params = {**{f"use_{op}": use[op] for op in TPE_OPS}, "views.mixback": mixback,
                  **({"views.mixback_alpha": alpha} if mixback else {})}
        trials.append(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                value=knn[-1] if len(knn) == 2 else None,
                                                state=TrialState.COMPLETE if len(knn) == 2 else TrialState.PRUNED,
                                                intermediate_values=dict(enumerate(knn, start=1))))
        ops = [op for op in TPE_OPS if use[op]]
        rows.append({"trial_id": f"t{i}", "optuna_number": i, "status": "COMPLETE" if len(knn) == 2 else "PRUNED",
                     "epochs_run": len(knn), "max_epochs": 2, "best_knn": max(knn), "last_knn": knn[-1],
                     "best_epoch": len(knn), "trial_dir": f"trial_t{i}", "encoder": "resnet18", "tau": 0.2,
                     "batch_size": 128, "sampling": "random", "separation": 0, "mixback": mixback,
                     "mixback_alpha": alpha, "mixback_energy_adjust": mixback, "ops": ">".join(ops), "seed": 0,
                     **{f"pos_{op}": ops.index(op) + 1 if op in ops else 0 for op in OPS},
                     **{f"param_{k}": v for k, v in params.items()},
                     **{f"knn_e{e}": v for e, v in enumerate(knn, start=1)}, "knn_history": knn})
    study.add_trials(trials)
    pd.DataFrame(rows).to_parquet(exp_dir / "trials.parquet")
    later = (exp_dir / "optuna.journal").stat().st_mtime + 10
    os.utime(exp_dir / "trials.parquet", (later, later))
    return exp_dir


def test_adjusted_effects_are_the_lstsq_hand_computation(tpe_exp):
    exp = load_experiment(tpe_exp)
    rows = stats.effects_adjusted(exp)
    first = rows[rows.scope == "rung e1 (epoch 1; every trial that reached it)"].set_index("factor")
    t = exp.table
    mixed = t.mixback.to_numpy(bool)
    log_alpha = np.log10(np.where(mixed, t.mixback_alpha, np.nan))
    columns = {f"op:{op}": (t[f"pos_{op}"] > 0).to_numpy(float) for op in TPE_OPS}
    columns |= {"mixback": mixed.astype(float),
                "mixback_alpha": np.where(mixed, log_alpha - np.nanmean(log_alpha), 0.0)}
    X = np.column_stack([np.ones(len(t)), *columns.values()])
    y = t.knn_e1.to_numpy()
    beta, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
    df = len(y) - X.shape[1]
    se = np.sqrt(np.diag(rss[0] / df * np.linalg.inv(X.T @ X)))
    p = 2 * scipy_stats.t.sf(np.abs(beta / se), df)[1:]
    order = np.argsort(p)
    holm = np.empty_like(p)
    holm[order] = np.minimum(1, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    assert set(first.index) == set(columns)  # energy adjustment equals mix-back here: not a factor
    for i, name in enumerate(columns):
        r = first.loc[name]
        assert r.estimate == pytest.approx(beta[i + 1], abs=1e-10)
        half = scipy_stats.t.ppf(0.975, df) * se[i + 1]
        assert (r.ci_low, r.ci_high) == pytest.approx((beta[i + 1] - half, beta[i + 1] + half), abs=1e-10)
        assert r.p_holm == pytest.approx(holm[i], rel=1e-9)
    noise = first.loc["op:noise"]
    assert (noise.level, noise.reference) == ("on", "off") and noise.ci_high < 0  # the planted -0.05
    assert (noise.n_level, noise.n_reference) == ((t.pos_noise > 0).sum(), (t.pos_noise == 0).sum())
    # the promoted rung: 5 trials for 6 coefficients, said and not estimated
    second = rows[rows.scope.str.startswith("rung e2")]
    assert second.estimate.isna().all() and second.method.str.contains("n too small to read").all()


def test_holm_by_hand():
    assert list(stats.holm(np.array([0.01, 0.04, np.nan, 0.03]))) == pytest.approx([0.03, 0.06, np.nan, 0.06],
                                                                                    nan_ok=True)


# ---------------------------------------------------------------- n/a marking and what the plots draw

@pytest.fixture(autouse=True)
def few_resamples(monkeypatch):
    monkeypatch.setattr(importance, "BOOTSTRAP", 3)  # the ranking's stability: 3 resamples are enough to test


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open (the real _save writes and closes them)."""
    kept = {}
    real = plots._save

    def keep(fig, path):
        kept[path.name] = fig
        real(fig, path)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)
    yield kept
    for fig in kept.values():
        matplotlib.pyplot.close(fig)


def test_na_marking_and_plots_draw_the_numbers_of_the_tables(tpe_exp, figures):
    exp = load_experiment(tpe_exp)
    rows, _ = importances(exp)
    e1 = rows[(rows.rung == "e1") & (rows.evaluator == "fanova")].set_index("param")
    # views.mixback_alpha only exists while mix-back is on: fANOVA cannot assess it
    assert np.isnan(e1.loc["views.mixback_alpha", "importance"]) and e1.loc["views.mixback_alpha", "note"].startswith("n/a")
    assert e1.importance.dropna().sum() == pytest.approx(1.0) and e1.importance.notna().sum() == 4
    out = tpe_exp / "analysis"
    analyse(tpe_exp)
    fig = figures["importance.png"]
    na_texts = sum(t.get_text() == "n/a" for ax in fig.axes for t in ax.texts)
    assert na_texts == rows.importance.isna().sum() > 0
    ax = fig.axes[0]  # fANOVA: bar widths are the importances, rung by rung
    widths = sorted(round(p.get_width(), 9) for p in ax.patches if p.get_width() > 0)
    fanova = rows[rows.evaluator == "fanova"].importance.dropna()
    assert widths == sorted(round(v, 9) for v in fanova if v > 0)
    # forest plot: whiskers are the CSV's intervals
    adjusted = pd.read_csv(out / "effects_adjusted.csv").dropna(subset=["ci_low"])
    ax = figures["effects_adjusted.png"].axes[0]
    segments = ax.collections[0].get_segments() if ax.collections else []
    drawn = sorted((round(s[0][0], 9), round(s[1][0], 9)) for s in segments)
    assert drawn == sorted((round(lo, 9), round(hi, 9)) for lo, hi in zip(adjusted.ci_low, adjusted.ci_high))
    # best so far: the running max of the COMPLETE trials' last-epoch kNN, in trial order
    table = exp.table.sort_values("optuna_number")
    line = figures["best_so_far.png"].axes[0].lines[0]
    expected = table.last_knn.where(table.status == "COMPLETE").cummax().ffill().to_numpy()  # a step, no gaps
    assert np.allclose(line.get_ydata(), expected, equal_nan=True)
    # rung survival: expected 1/2^k and the actual shares
    survival = pd.read_csv(out / "rung_survival.csv")
    assert list(survival.expected) == [1.0, 0.5] and list(survival.actual) == [1.0, 0.25]
    heights = sorted(round(p.get_height(), 9) for p in figures["rung_survival.png"].axes[0].patches
                     if p.get_height() > 0)
    assert heights == sorted([1.0, 0.5, 1.0, 0.25])
    assert (out / "parallel.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "e1 20 (100% vs 100%), e2 5 (25% vs 50%)" in report
    assert "op:noise on vs off: −0.0" in report  # the adjusted row, with its interval, is what the report reads


def test_variant_curves_are_seed_means(hand_exp, figures):
    analyse(hand_exp)
    ax = figures["variant_curves.png"].axes[0]
    handle = next(h for h in ax.get_legend().legend_handles if h.get_label().startswith("default"))
    assert handle.get_label() == "default (n=3)"
    default = next(line for line in ax.lines if len(line.get_ydata()) and line.get_color() == handle.get_color())
    assert list(default.get_ydata()) == pytest.approx([0.50, 0.60])  # seed means at epochs 1 and 2
