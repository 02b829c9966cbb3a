"""Retraining: the CLI on a small experiment (2 seeds × 1 epoch), its table against a hand computation,
resuming, and its errors. The experiment dir is written by hand from the smoke space (a trials table
with two complete trials), so no search has to run here."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from uclser_tune.retrain import summarise
from uclser_tune.search.spaces import load_space

pytestmark = pytest.mark.slow
TINY = ["--set", "data.synth_size=tiny", "--set", "model.width=0.125", "--set", "model.proj_hidden=32",
        "--set", "model.proj_dim=16", "--set", "train.max_batches_per_epoch=2", "--set", "train.batch_size=16",
        "--set", "eval.knn_k=5", "--set", "downstream.batch_size=32", "--set", "train.num_threads=1"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_store):
    space = load_space("smoke.yaml")
    overrides = {"train.epochs": 4, "eval.every": 1}
    exp = tmp_path_factory.mktemp("exp") / "smoke"
    exp.mkdir()
    (exp / "search.json").write_text(json.dumps({"space": str(space.path), "space_digest": space.digest,
                                                 "overrides": overrides, "storage": "journal:optuna.journal",
                                                 "study_name": "smoke"}))  # what the search writes
    rows = []
    for number, (tau, ops, knn) in enumerate([(0.1, ["noise", "rrc"], 0.30), (0.3, ["rrc"], 0.40),
                                             (0.2, [], 0.90)]):
        cfg = space.build({**overrides, "train.tau": tau, "views.ops": ops})
        rows.append({"optuna_number": number, "status": "PRUNED" if knn > 0.5 else "COMPLETE",
                     "last_knn": knn, "config_yaml": cfg.to_yaml()})
    pd.DataFrame(rows).to_parquet(exp / "trials.parquet")
    return exp


def retrain(exp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uclser_tune.retrain", str(exp), "--seeds", "2", "--epochs", "1",
                           "--downstream-epochs", "1", *TINY, *extra], capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def retrained(experiment):
    proc = retrain(experiment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return experiment / "retrain", proc


def paired_p_two_seeds(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test p-value for two pairs, by hand: t = mean(d) / (sd(d) / √2) has one degree
    of freedom, a Cauchy distribution, so p = 1 - (2/π)·atan|t|. No spread in d: no t, p is NaN."""
    d = [x - y for x, y in zip(a, b)]
    sd = abs(d[0] - d[1]) / math.sqrt(2)
    if sd < 1e-12:
        return math.nan
    return 1 - 2 / math.pi * math.atan(abs((d[0] + d[1]) / 2) / (sd / math.sqrt(2)))


def test_best_complete_trial_default_and_random_init_for_every_seed(retrained):
    out, _ = retrained
    runs = pd.read_csv(out / "runs.csv")
    # the best *complete* trial (number 1; the pruned one with a higher kNN is out of scope)
    assert list(zip(runs["name"], runs["seed"])) == [
        ("trial_1", 0), ("default", 0), ("random_init", 0), ("trial_1", 1), ("default", 1), ("random_init", 1)]
    pretrained = runs[runs["init"] == "pretrained"]
    for col in ("knn_val", "knn_test", "linear", "finetune_noisy", "finetune_clean"):
        assert pretrained[col].between(0, 1).all(), col
    baseline = runs[runs["name"] == "random_init"]
    assert baseline["linear"].isna().all() and baseline["finetune_noisy"].between(0, 1).all()
    cfg = (out / "trial_1" / "seed_1" / "config.yaml").read_text()
    assert "tau: 0.3" in cfg and "seed: 1" in cfg and "epochs: 1" in cfg
    default = (out / "default" / "seed_0" / "config.yaml").read_text()
    assert "tau: 0.2" in default and "- compression" in default  # the paper's τ and views
    assert (out / "trial_1" / "seed_0" / "checkpoint.pt").exists()


def test_summary_is_the_hand_computation(retrained):
    out, _ = retrained
    runs = pd.read_csv(out / "runs.csv")
    summary = pd.read_csv(out / "summary.csv").set_index(["name", "metric"])
    for (name, metric), row in summary.iterrows():
        values = runs.loc[runs["name"] == name, metric]
        assert row["mean"] == pytest.approx(values.mean()) and row["n"] == 2
        assert row["sd"] == pytest.approx(values.std(ddof=1))
    a = runs[runs["name"] == "trial_1"].set_index("seed")["finetune_clean"]
    b = runs[runs["name"] == "default"].set_index("seed")["finetune_clean"]
    row = summary.loc[("trial_1", "finetune_clean")]
    assert row["diff"] == pytest.approx((a - b).mean())
    assert row["p"] == pytest.approx(paired_p_two_seeds(list(a), list(b)), nan_ok=True)
    assert math.isnan(summary.loc[("default", "knn_val"), "diff"])
    md = (out / "summary.md").read_text()
    assert "paired t-test" in md and "Holm" in md and "p_holm=" in md
    assert md.index("| trial_1") < md.index("| default") < md.index("| random_init")  # the runs' order


def test_rerun_skips_finished_jobs(retrained, experiment):
    out, _ = retrained
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/*.json")}
    proc = retrain(experiment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 jobs, 6 already done" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/*.json")} == before


def test_changed_config_and_missing_experiment_are_refused(retrained, experiment, tmp_path):
    proc = retrain(experiment, "--set", "train.tau=0.5")
    assert proc.returncode == 2 and "config differs" in proc.stderr
    # a job without a checkpoint (the random-init baseline) is checked too, and its results are kept
    out, _ = retrained
    only_baseline = tmp_path / "only_baseline"
    shutil.copytree(out / "random_init", only_baseline / "random_init")
    before = (only_baseline / "random_init" / "seed_0" / "config.yaml").read_text()
    proc = retrain(experiment, "--set", "train.tau=0.5", "--out", str(only_baseline))
    assert proc.returncode == 2 and "random_init" in proc.stderr and "config differs" in proc.stderr
    assert (only_baseline / "random_init" / "seed_0" / "config.yaml").read_text() == before
    proc = retrain(tmp_path / "nope")
    assert proc.returncode == 2 and "no such experiment" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = retrain(tmp_path / "empty")
    assert proc.returncode == 2 and "search.json" in proc.stderr


def test_summarise_paired_difference():
    runs = pd.DataFrame({"name": ["default"] * 3 + ["x"] * 3, "seed": [0, 1, 2] * 2,
                         "knn_val": [0.5, 0.6, 0.7, 0.6, 0.8, 0.8]})
    s = summarise(runs).set_index(["name", "metric"])
    assert s.loc[("x", "knn_val"), "diff"] == pytest.approx(0.1333333, rel=1e-5)
    # d = 0.1, 0.2, 0.1: t = (0.4/3) / (0.057735 / √3) = 4.0 with 2 degrees of freedom, p = 1 - t/√(2 + t²)
    assert s.loc[("x", "knn_val"), "p"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-4)
    # its 95 % interval: mean ± t(0.975, 2) · sd / √3 with t(0.975, 2) = 4.302653
    half = 4.302653 * 0.0577350 / math.sqrt(3)
    assert (s.loc[("x", "knn_val"), "ci_low"], s.loc[("x", "knn_val"), "ci_high"]) == pytest.approx(
        (0.1333333 - half, 0.1333333 + half), rel=1e-5)
    assert s.loc[("x", "knn_val"), "p_holm"] == pytest.approx(s.loc[("x", "knn_val"), "p"])  # one metric: no change
    # two metrics of one config: Holm over them (smaller p × 2, the larger × 1 but not below it); another
    # config's metrics are a family of their own
    p_val = 1 - 4 / math.sqrt(18)  # knn_val as above
    # knn_test: d = 0.1, 0.3, 0.2: t = 0.2 / (0.1 / √3) = 2√3 with 2 df, p = 1 - t/√(2 + t²)
    p_test = 1 - 2 * math.sqrt(3) / math.sqrt(14)
    two = runs.assign(knn_test=[0.5, 0.5, 0.5, 0.6, 0.8, 0.7])
    two = pd.concat([two, two[two.name == "x"].assign(name="z", knn_test=[0.9, 0.9, 0.9])])
    t = summarise(two).set_index(["name", "metric"])
    assert (t.loc[("x", "knn_val"), "p"], t.loc[("x", "knn_test"), "p"]) == pytest.approx((p_val, p_test), rel=1e-4)
    low, high = sorted((p_val, p_test))
    assert sorted(t.loc["x", "p_holm"]) == pytest.approx([2 * low, max(2 * low, high)], rel=1e-4)
    assert t.loc[("z", "knn_val"), "p_holm"] == pytest.approx(p_val, rel=1e-4)  # z's knn_test has no p (same d)
    # the same difference on every seed (up to float rounding): no t statistic, p stays NaN
    same = pd.DataFrame({"name": ["default"] * 2 + ["y"] * 2, "seed": [0, 1] * 2, "knn_val": [0.05, 0.15, 0.1, 0.2]})
    row = summarise(same).set_index(["name", "metric"]).loc[("y", "knn_val")]
    assert row["diff"] == pytest.approx(0.05) and math.isnan(row["p"])


def test_top_k_without_default_and_the_default_without_its_space_file(experiment, tmp_path, capsys):
    from uclser_tune.config import config_from_dict
    from uclser_tune.retrain import candidates, plan

    # the 2 best COMPLETE trials by final kNN (trial 2 scored 0.9 but was PRUNED), no default
    cands = candidates(experiment, top=2, with_default=False)
    assert list(cands) == ["trial_1", "trial_0"]
    assert (cands["trial_1"].train.tau, cands["trial_0"].train.tau) == (0.3, 0.1)
    jobs = plan(cands, 2, {"train.epochs": 1}, tmp_path)
    assert [(j["name"], j["seed"]) for j in jobs] == [("trial_1", 0), ("trial_0", 0), ("random_init", 0),
                                                     ("trial_1", 1), ("trial_0", 1), ("random_init", 1)]
    # the space file is gone: the default is the best config with the paper's views, tau and batch size
    moved = tmp_path / "moved"
    shutil.copytree(experiment, moved)
    meta = json.loads((moved / "search.json").read_text())
    (moved / "search.json").write_text(json.dumps({**meta, "space": str(tmp_path / "gone.yaml")}))
    default = candidates(moved, top=1, with_default=True)["default"]
    assert "warning" in capsys.readouterr().err
    paper = config_from_dict({})
    best = cands["trial_1"]
    assert default.views == paper.views and default.train.tau == 0.2 and default.train.batch_size == 128
    assert (default.model, default.data, default.train.epochs) == (best.model, best.data, best.train.epochs)


def test_cli_top_2_no_default(experiment, tmp_path):
    out = tmp_path / "top2"
    proc = retrain(experiment, "--top", "2", "--no-default", "--seeds", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["name"]) == ["trial_1", "trial_0", "random_init"] and set(runs["seed"]) == {0}
    assert not (out / "default").exists()
