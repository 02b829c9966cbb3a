"""The sensitivity analysis (``python -m analysis``) on a real smoke search (Ray on 127.0.0.5) and on a
hand-made paper_ablations-like experiment whose numbers are known, so tables are checked exactly."""

import json
import os
import shutil
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from analysis import effects
from analysis.__main__ import main
from analysis.importance import importances
from analysis.load import asha_rungs, load_experiment
from analysis.run import analyse
from uclser_tune.config import OP_NAMES as OPS

PNGS = ["importance.png", "ops_onoff.png", "positions.png", "config_effects.png", "knn_curves.png"]
CSVS = ["importance.csv", "effects.csv", "ops_onoff.csv"]


# ---------------------------------------------------------------- a real smoke search (about a minute)

@pytest.fixture(scope="module")
def real_exp(tmp_path_factory, tiny_store):
    root = tmp_path_factory.mktemp("analysis_runs")
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--name", "a",
           "--storage-path", str(root), "--node-ip-address", "127.0.0.5", "--num-samples", "6"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root / "a"


@pytest.fixture(scope="module")
def real_out(real_exp, tmp_path_factory):
    """The CLI as a user runs it, into --out."""
    out_dir = tmp_path_factory.mktemp("analysis_out")
    proc = subprocess.run([sys.executable, "-m", "analysis", str(real_exp), "--out", str(out_dir)],
                          check=False, capture_output=True, text=True, timeout=300)
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
    for name in CSVS:
        assert f"[{name}]({name})" in report
    assert "best val kNN balanced accuracy at the final rung" in report
    assert "ASHA rungs e1, e2, e4" in report and "PRUNED" in report
    assert " on: " in report and "kNN (n=" in report  # a reading line generated from the numbers


@pytest.mark.slow
def test_real_search_onoff_is_the_hand_computation(real_exp, real_out):
    table = pd.read_parquet(real_exp / "trials.parquet")
    csv = pd.read_csv(real_out / "ops_onoff.csv")
    exp = load_experiment(real_exp)
    api = effects.ops_onoff(effects.effects(effects.observations(exp)))
    checked = 0
    for metric in ["last_knn", "knn_e1", "knn_e2", "knn_e4"]:
        for op in OPS:
            on = table.loc[table[f"pos_{op}"] > 0, metric].dropna()
            off = table.loc[table[f"pos_{op}"] == 0, metric].dropna()
            rows = api[(api.op == op) & (api.metric == metric)]
            if on.empty and off.empty or table[f"pos_{op}"].gt(0).nunique() < 2:
                assert rows.empty  # an op that never varies has no effect row
                continue
            row = rows.iloc[0]
            assert (row.n_on, row.n_off) == (len(on), len(off))
            if len(on) and len(off):
                # same numbers up to summation order (groupby vs Series.mean differ in the last bit)
                assert row["diff"] == pytest.approx(on.mean() - off.mean(), rel=1e-12, abs=1e-15)
                assert row.mean_on == pytest.approx(on.mean(), rel=1e-12)
                assert row.mean_off == pytest.approx(off.mean(), rel=1e-12)
                assert row.sd_on == pytest.approx(on.std(), nan_ok=True)
                from_csv = csv[(csv.op == op) & (csv.metric == metric)].iloc[0]
                assert from_csv["diff"] == pytest.approx(on.mean() - off.mean(), abs=1e-12)
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
    for _, part in first.groupby("evaluator"):
        assert part.importance.sum() == pytest.approx(1.0) and (part.importance >= 0).all()
    # fANOVA only assesses what every trial suggested; PED-ANOVA takes the conditional ones too
    assert "views.mixback_alpha" not in set(first[first.evaluator == "fanova"].param)
    report = (real_out / "report.md").read_text()
    for rung in ("e2", "e4"):
        n = int(table[f"knn_e{rung[1:]}"].notna().sum())
        if n < 4:
            assert f"rung {rung}: {n} trial(s) with a value, fewer than 4" in report


@pytest.mark.slow
def test_running_experiment_is_rebuilt_from_trial_dirs(real_exp, tmp_path):
    exp_dir = tmp_path / "a"
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
    md = (out / "paper_table2.md").read_text()
    default_line = next(line for line in md.splitlines() if "rrc > compression > noise (default)" in line)
    # no trials: rrc > compression, rrc > specaugment; not COMPLETE: specaugment, none
    assert "0.600 ± 0.020" in default_line and md.count("—") == 4
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
    for metric in ["last_knn", "knn_e2"]:
        expected = table.dropna(subset=[metric]).groupby(["tau", "batch_size"])[metric].agg(["mean", "count"])
        got = cells[cells.metric == metric].set_index(["tau_bin", "batch_size"])
        assert len(got) == len(expected) == 4
        for (tau, batch), e in expected.iterrows():
            assert got.loc[(tau, batch), "mean"] == pytest.approx(e["mean"])
            assert got.loc[(tau, batch), "n"] == e["count"]
    assert "best cell τ" in (out / "report.md").read_text()


def test_importance_on_completed_trials_and_rungs(hand_exp):
    rows, skipped = importances(load_experiment(hand_exp))
    assert set(rows.rung) == {"complete", "e2"} and not skipped
    complete = rows[rows.rung == "complete"]
    assert set(complete.evaluator) == {"fanova", "ped_anova"}
    assert set(complete.param) == {"variant", "seed", "train.tau", "train.batch_size"}
    assert (complete.n_trials == 11).all()
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
    alpha = rows[(rows.factor == "mixback_alpha") & (rows.metric == "last_knn")]
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
    (empty / "search.json").write_text(json.dumps({"space": "smoke.yaml", "overrides": {}, "study_name": "e",
                                                   "storage": "journal:optuna.journal"}))
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
