"""``experiments.paper_effects`` (the paper's three claims in one command) and ``experiments.transfer``
(the drum set): their statistics against hand computations, and a quick run of each on tiny data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from experiments.paper_effects import CLAIMS, COLUMNS, claim_rows
from experiments.transfer import SOURCES, K, logmel_mean_std
from tests.conftest import make_clips
from uclser_tune.config import config_from_dict
from uclser_tune.data.store import open_store
from uclser_tune.evaluation.metrics import balanced_accuracy


def test_claims_are_paired_t_tests_holm_corrected_by_hand():
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2, 3]
    shift = {"default": 0.0, "same": -0.08, "no_da": -0.01, "no_mixback": 0.05}  # default − b: -0.08, -0.01, +0.05
    best = {(v, s): 0.5 - shift[v] + rng.normal(0, 0.01) for v in shift for s in seeds}
    rows = claim_rows(best, seeds)
    assert [r["claim"] for r in rows] == [c for c, _, _ in CLAIMS]
    ps = []
    for row, (_, a, b) in zip(rows, CLAIMS):
        d = np.array([best[a, s] - best[b, s] for s in seeds])
        res = stats.ttest_rel([best[a, s] for s in seeds], [best[b, s] for s in seeds])
        ci = res.confidence_interval(0.95)
        assert row["diff"] == pytest.approx(d.mean()) and row["n"] == 4
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert row["mean_a"] - row["mean_b"] == pytest.approx(d.mean())
        ps.append(res.pvalue)
    order = np.argsort(ps)
    holm = np.maximum.accumulate([min(1, (3 - i) * ps[j]) for i, j in enumerate(order)])
    assert [rows[j]["p_holm"] for j in order] == pytest.approx(list(holm))
    # a significant negative gap does not hold; a significant positive one does
    assert rows[0]["p_holm"] < 0.05 and [r["holds"] for r in rows] == [False, False, True]


def test_logmel_mean_std_by_hand():
    clips = make_clips(n=5, seed=3)
    got = logmel_mean_std(clips.subset([4, 0, 2, 1, 3]))  # not in frame order: offsets are honoured
    want = []
    for i in [4, 0, 2, 1, 3]:
        f = clips.frames[clips.offsets[i]:clips.offsets[i] + clips.lengths[i]].double().numpy()
        want.append(np.concatenate([f.mean(0), f.std(0)]))
    want = np.array(want)
    want = (want - want.mean(0)) / (want.std(0, ddof=1) + 1e-8)
    assert torch.allclose(got, torch.from_numpy(want).float(), atol=1e-4)


@pytest.mark.slow
def test_quick_run_writes_the_claims_resumes_and_transfers(tmp_path, tiny_store):
    work, out = tmp_path / "work", tmp_path / "out"
    cmd = [sys.executable, "-m", "experiments.paper_effects", "--size", "tiny", "--epochs", "1", "--seeds", "0", "1",
           "--work", str(work), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("epochs in") == 8
    with open(out / "paper_effects.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and [r["claim"] for r in rows] == [c for c, _, _ in CLAIMS]
    assert all(r["n"] == "2" for r in rows) and (out / "paper_effects.png").stat().st_size > 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0 and "epochs in" not in again.stdout  # every run finished: none is re-run
    with open(out / "paper_effects.csv") as f:
        assert list(csv.DictReader(f)) == rows
    if "DRUM_HITS_DIR" not in os.environ:
        pytest.skip("DRUM_HITS_DIR not set (.ci/run sets it): the transfer half needs the drum set")
    tr = subprocess.run([sys.executable, "-m", "experiments.transfer", "--drums", os.environ["DRUM_HITS_DIR"],
                         "--weights", str(work), "--out", str(tmp_path / "tr")], capture_output=True, text=True,
                        timeout=600, check=False)
    assert tr.returncode == 0, tr.stderr[-3000:]
    with open(tmp_path / "tr" / "transfer.csv") as f:
        accs = list(csv.DictReader(f))
    assert {(r["encoder"], r["split"]) for r in accs} == {
        (e, s) for e in ("pretrained", "random_init", "logmel_mean_std") for s in ("test", "val")}
    # every balanced accuracy is recomputed from the committed per-clip predictions
    with open(tmp_path / "tr" / "clip_predictions.csv") as f:
        clips = list(csv.DictReader(f))
    for r in accs:
        mine = [c for c in clips if (c["encoder"], c["seed"], c["split"]) == (r["encoder"], r["seed"], r["split"])]
        y, p = (torch.tensor([int(c[k]) for c in mine]) for k in ("label", "pred"))
        assert float(r["knn_bacc"]) == pytest.approx(balanced_accuracy(y, p))
    with open(tmp_path / "tr" / "comparisons.csv") as f:
        comps = list(csv.DictReader(f))
    assert len(comps) == 4 and all(float(c["boot_ci_low"]) <= float(c["diff"]) <= float(c["boot_ci_high"])
                                   for c in comps)
    missing = subprocess.run([sys.executable, "-m", "experiments.transfer", "--drums", os.environ["DRUM_HITS_DIR"],
                              "--weights", str(work), "--seeds", "0", "1", "7", "--out", str(tmp_path / "tr2")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "--seeds" in missing.stderr and not (tmp_path / "tr2").exists()
    check_leave_kit_out(Path(os.environ["DRUM_HITS_DIR"]), work, tmp_path)


def check_leave_kit_out(drums, work, tmp_path):
    """--leave-kit-out: the baseline's prediction of a clip is the majority of its K nearest clips of
    other kits, by brute force from sources.csv; without sources.csv it is refused."""
    out = tmp_path / "kit"
    run = subprocess.run([sys.executable, "-m", "experiments.transfer", "--drums", str(drums), "--weights", str(work),
                          "--leave-kit-out", "--out", str(out)], capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "leave-one-kit-out" in (out / "report.md").read_text()
    with open(out / "clip_predictions.csv") as f:
        got = [int(r["pred"]) for r in csv.DictReader(f) if (r["encoder"], r["split"]) == ("logmel_mean_std", "test")]
    with open(drums / SOURCES) as f:
        kit_of = {r["fname"]: r["source_path"].split("/")[0] for r in csv.DictReader(f)}
    clips = open_store(config_from_dict({"data": {"root": str(drums)}}).data).splits["test"].to_torch()
    feats = torch.nn.functional.normalize(logmel_mean_std(clips), dim=1)
    sims, kits = feats @ feats.T, [kit_of[c] for c in clips.clip_ids]
    want = []
    for i in range(len(kits)):
        near = sorted((j for j in range(len(kits)) if kits[j] != kits[i]), key=lambda j: -float(sims[i, j]))[:K]
        votes = Counter(int(clips.labels[j]) for j in near)
        want.append(min(c for c, v in votes.items() if v == max(votes.values())))
    assert got == want
    bare = tmp_path / "bare"  # the set without its doc folder
    bare.mkdir()
    for name in ("FSDnoisy18k.meta", "FSDnoisy18k.audio_train", "FSDnoisy18k.audio_test"):
        (bare / name).symlink_to(drums / name)
    refused = subprocess.run([sys.executable, "-m", "experiments.transfer", "--drums", str(bare), "--weights", str(work),
                              "--leave-kit-out", "--out", str(tmp_path / "kit2")], capture_output=True, text=True,
                             check=False)
    assert refused.returncode == 2 and "sources.csv" in refused.stderr and not (tmp_path / "kit2").exists()


def test_bad_arguments_exit_2_before_any_run(tmp_path):
    run = subprocess.run([sys.executable, "-m", "experiments.paper_effects", "--seeds", "0", "--work",
                          str(tmp_path / "w")], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and not (tmp_path / "w").exists()


def test_runs_on_another_data_seed_are_not_mixed_into_a_work_dir(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "default-seed0.json").write_text(json.dumps({"variant": "default", "seed": 0,
                                                          "config": {"data": {"synth_seed": 0}}}))
    run = subprocess.run([sys.executable, "-m", "experiments.paper_effects", "--synth-seed", "1", "--work", str(work),
                          "--out", str(tmp_path / "out"), "--size", "tiny", "--epochs", "1", "--seeds", "0", "1"],
                         capture_output=True, text=True, timeout=600, check=False)  # tiny: quick if not refused
    assert run.returncode == 2 and run.stderr.startswith("error: --work") and "--synth-seed" in run.stderr
    assert sorted(p.name for p in work.iterdir()) == ["default-seed0.json"] and not (tmp_path / "out").exists()


def test_claims_over_draws_by_hand(tmp_path):
    """Each draw's diff is one value: t over draws (2 df, t 4.3027 from a table), Holm over the 3 claims."""
    per_draw = {"random>same": [0.02, 0.05, 0.08], "default_da>no_da": [0.10, 0.12, 0.14],
                "mixback>no_mixback": [-0.01, 0.02, 0.0]}
    dirs = []
    for i in range(3):
        d = tmp_path / f"draw{i}"
        d.mkdir()
        with open(d / "paper_effects.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["claim", "diff", "n"])
            w.writeheader()
            w.writerows({"claim": c, "diff": v[i], "n": 5} for c, v in per_draw.items())
        dirs.append(str(d))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "experiments.paper_effects_draws", *dirs, "--out", str(out)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    with open(out / "paper_effects_draws.csv") as f:
        rows = {r["claim"]: r for r in csv.DictReader(f)}
    half = 4.302653 * 0.03 / np.sqrt(3)  # random>same: mean 0.05, sd 0.03
    got = rows["random>same"]
    assert float(got["diff"]) == pytest.approx(0.05)
    assert (float(got["ci_low"]), float(got["ci_high"])) == pytest.approx((0.05 - half, 0.05 + half), abs=1e-6)
    # p: 0.1020 (t 2.887), 0.00913 (t 10.39), 0.742 (t 0.378), all 2 df; Holm: ×2, ×3, ×1 in p order
    want = {"random>same": 2 * 0.1020, "default_da>no_da": 3 * 0.00913, "mixback>no_mixback": 0.742}
    for claim, p in want.items():
        assert float(rows[claim]["p_holm"]) == pytest.approx(p, abs=2e-3)
        assert (rows[claim]["holds"] == "True") == (claim == "default_da>no_da")
    assert rows["mixback>no_mixback"]["per_draw"] == "-0.0100 +0.0200 +0.0000"
    bad = subprocess.run([sys.executable, "-m", "experiments.paper_effects_draws", dirs[0], str(tmp_path / "none"),
                          "--out", str(tmp_path / "out2")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and not (tmp_path / "out2").exists()
