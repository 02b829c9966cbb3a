"""The planted-truth surrogate (``--surrogate TRUTH.yaml``): the TRUTH schema and its errors, the score
by hand, determinism, the best achievable score, and a search that is SIGKILLed and resumed (Ray on
127.0.0.7): a trial the last snapshot lacks is lost and replaced, an unreadable newer snapshot is set
aside, every other trial continues from its checkpoint, and the journal loads in optuna-dashboard. (The
real trainable's checkpoint restore is tested by tests/test_multinode.py's worker kill.)"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import optuna_dashboard
import pandas as pd
import pytest
from children import Child, poll_until, run
from optuna_dashboard._storage_url import get_storage

from analysis.load import load_experiment
from analysis.report import header
from uclser_tune.config import RunConfig, config_from_dict
from uclser_tune.search import surrogate
from uclser_tune.search.results import META_FILE, open_study
from uclser_tune.search.spaces import load_space
from uclser_tune.search.state import LOST_NOTE, restored_trials
from uclser_tune.search.surrogate import TruthError, best_achievable, contributions, load_truth, score

TRUTH = """
base: 0.5
noise_sd: 0.01
effects:
  - {when: {views.mixback: true}, add: 0.12}
  - {when: {op: specaugment}, add: 0.05}
  - {when: {before: [rrc, compression]}, add: 0.03}
  - {peak: {key: train.tau, log10_at: -0.7, width: 0.5}, add: 0.08}
"""


@pytest.fixture
def truth(tmp_path):
    path = tmp_path / "truth.yaml"
    path.write_text(TRUTH)
    return load_truth(path)


def cfg(**dotted):
    return RunConfig().replace(dotted)


def test_contributions_and_score_by_hand(truth):
    c = cfg(**{"views.mixback": True, "views.ops": ["compression", "rrc", "specaugment"], "train.tau": 0.5})
    peak = 0.08 * math.exp(-((math.log10(0.5) + 0.7) / 0.5) ** 2)
    assert contributions(truth, c) == pytest.approx([0.12, 0.05, 0.0, peak])  # compression before rrc: no
    c2 = cfg(**{"views.mixback": False, "views.ops": ["rrc", "noise", "compression"], "train.tau": 10 ** -0.7})
    assert contributions(truth, c2) == pytest.approx([0.0, 0.0, 0.03, 0.08])
    final = score(truth, c2, 8, 8, seed=0)
    noise = final - surrogate.noiseless(truth, c2)
    assert abs(noise) < 5 * 0.01 and noise != 0
    # the curve: rising from 0 to the final score, the same share for every trial
    curve = [score(truth, c2, e, 8, seed=0) for e in range(1, 9)]
    assert all(a < b for a, b in itertools.pairwise(curve)) and curve[-1] == final
    assert curve[1] / final == pytest.approx((1 - math.exp(-3 * 2 / 8)) / (1 - math.exp(-3)))


def test_score_is_deterministic_and_the_noise_has_the_planted_sd(truth):
    c = cfg(**{"views.mixback": True})
    assert score(truth, c, 3, 8, seed=4) == score(truth, c, 3, 8, seed=4)  # a resumed trial reports the same
    noise = np.array([score(truth, c, 8, 8, seed=s) for s in range(200)]) - surrogate.noiseless(truth, c)
    assert noise.std() == pytest.approx(0.01, rel=0.2) and abs(noise.mean()) < 0.002
    other = cfg(**{"views.mixback": True, "views.mixback_alpha": 0.06})  # same effects, another config
    assert score(truth, other, 8, 8, seed=4) != score(truth, c, 8, 8, seed=4)
    same = run([sys.executable, "-c", ("from uclser_tune.search.surrogate import *; from uclser_tune.config "
                f"import RunConfig; t = load_truth({str(truth.path)!r}); "
                "print(repr(score(t, RunConfig().replace({'views.mixback': True}), 3, 8, 4)))")], 120,
               "the score in another process")
    assert same.returncode == 0, same.stderr
    assert float(same.stdout) == score(truth, c, 3, 8, seed=4)  # not Python's salted hash


@pytest.mark.parametrize("text, message", [
    ("base: 0.5\neffects: []\nnoise: 0.1\n", "unknown key 'noise'"),
    ("base: 0.5\neffects:\n  - {when: {views.mixbak: true}, add: 0.1}\n", "effects[0].when: unknown key 'views.mixbak'"),
    ("base: 0.5\neffects:\n  - {when: {op: reverb}, add: 0.1}\n", "effects[0].when.op: unknown op 'reverb'"),
    ("base: 0.5\neffects:\n  - {when: {before: [rrc, echo]}, add: 0.1}\n", "unknown op 'echo'"),
    ("base: 0.5\neffects:\n  - {when: {op: rrc}, add: 0.1, sd: 1}\n", "effects[0].sd: unknown key 'sd'"),
    ("base: 0.5\neffects:\n  - {peak: {key: train.tau, log10_at: 0, width: 1, top: 2}, add: 0.1}\n",
     "effects[0].peak.top: unknown key 'top'"),
    ("base: 0.5\neffects:\n  - {peak: {key: views.sampling, log10_at: 0, width: 1}, add: 0.1}\n",
     "views.sampling is not a numeric run-config key"),
    ("base: 0.5\neffects:\n  - {peak: {key: views.op_params.fuzz.x, log10_at: 0, width: 1}, add: 0.1}\n",
     "unknown op 'fuzz'"),
    ("base: 0.5\neffects:\n  - {when: {op: rrc}, add: big}\n", "effects[0].add: got 'big'; expected a number"),
    ("base: 0.5\nnoise_sd: -1\neffects: []\n", "noise_sd: got -1; must be >= 0"),
])
def test_schema_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TruthError) as err:
        load_truth(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_cli_unknown_op_is_one_error_line_exit_2_nothing_written(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: 0.5\neffects:\n  - {when: {op: reverb}, add: 0.1}\n")
    out = run([sys.executable, "-m", "uclser_tune.search", "--space", "augs.yaml", "--surrogate", str(bad),
               "--storage-path", str(tmp_path / "runs")], 120, "the refusal of an unknown op")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [(f"error: {bad}: effects[0].when.op: unknown op 'reverb'; ops: "
                                               "rrc, compression, noise, specaugment, time_shift, freq_shift, "
                                               "time_reversal, blur")]
    assert not (tmp_path / "runs").exists()


def test_every_committed_truth_loads():
    for path in sorted((Path(__file__).parents[1] / "search_spaces" / "truths").glob("*.yaml")):
        assert load_truth(path).effects, path


def test_best_achievable_is_the_max_over_the_space(truth):
    space = load_space("augs.yaml")
    best, config = best_achievable(truth, space, {"train.epochs": 8})
    tau_peak = 0.08 * math.exp(-((math.log10(0.2) + 0.7) / 0.5) ** 2)  # tau is fixed at 0.2 in augs.yaml
    assert best == pytest.approx(0.5 + 0.12 + 0.05 + 0.03 + tau_peak)
    assert config.views.mixback and "specaugment" in config.views.ops
    assert config.views.ops.index("rrc") < config.views.ops.index("compression")
    assert best == pytest.approx(surrogate.noiseless(truth, config))
    # no random config of the space beats it (and some come close: the bound is reachable)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = []
    for _ in range(150):
        trial = study.ask()
        values.append(surrogate.noiseless(truth, config_from_dict(space.define_by_run(trial)["run_config"])))
    assert max(values) <= best + 1e-12
    peak_space = load_space("tau_batch.yaml")
    best_tau, c = best_achievable(truth, peak_space)
    assert c.train.tau == pytest.approx(10 ** -0.7) and best_tau == pytest.approx(surrogate.noiseless(truth, c))


# ---------------------------------------------------------------- a search, SIGKILLed and resumed

@pytest.mark.slow
def test_surrogate_search_sigkill_then_rerun_resumes_with_the_same_scores(tmp_path, truth):
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "augs.yaml", "--surrogate", str(truth.path),
           "--name", "s", "--storage-path", str(tmp_path / "runs"), "--node-ip-address", "127.0.0.7",
           "--num-samples", "4", "--max-epochs", "20", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
           "--max-concurrent", "2"]
    exp = tmp_path / "runs" / "s"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    search = Child(proc, "the surrogate search", log=tmp_path / "first.log")

    def running_trials() -> dict[int, int]:
        """Study trials still RUNNING: epochs reported so far (the study is written as results arrive;
        result.json reaches the experiment dir only at Ray's syncs)."""
        if not ((exp / META_FILE).exists() and (exp / "optuna.journal").exists()):
            return {}
        trials = open_study(exp, json.loads((exp / META_FILE).read_text())).trials
        return {t.number: len(t.intermediate_values) for t in trials if t.state.name == "RUNNING"}

    try:
        poll_until(lambda: any(n >= 5 for n in running_trials().values()), None,
                   "a trial with 5 epochs reported and still running in the study", alive=search)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        search.wait(60, "the SIGKILLed search's exit")
    # killed mid-trial: running in the study, which a trial that ASHA stopped (at its rung, epoch 10) is not
    killed_at = running_trials()
    assert any(1 <= n < 20 for n in killed_at.values()), killed_at
    # Ray copies trial dirs and snapshots into the experiment dir while it goes on, so the last whole
    # experiment state can lack a trial that has a dir, a study trial, and a place in the searcher's and
    # the generator's state (Ray writes its snapshots apart, so they can be from different moments). Made certain here: the newest running trial is taken out of it.
    state_file = max(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    running = [i for i, (trial, _) in enumerate(state["trial_data"]) if json.loads(trial)["status"] != "TERMINATED"]
    # one that has written its params.json, if any (a trial started just before the kill may have an empty dir)
    written = [i for i in running
               if (exp / json.loads(state["trial_data"][i][0])["relative_logdir"] / "params.json").exists()]
    dropped = json.loads(state["trial_data"].pop((written or running)[-1])[0])
    state_file.write_text(json.dumps(state))
    snapshotted = set(restored_trials(exp))
    # as if a later session had been killed while Ray copied its snapshot: an empty newest state file
    (exp / "experiment_state-9999-12-31_23-59-59.json").write_text("")
    out = run(cmd, None, "the resumed search")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming experiment" in out.stderr and "no training" in out.stderr
    assert "session 9999-12-31_23-59-59 is unreadable" in out.stderr
    assert (exp / "broken_state" / "experiment_state-9999-12-31_23-59-59.json").exists()
    table = pd.read_parquet(exp / "trials.parquet")
    lost = table.error.str.startswith(LOST_NOTE)
    # a lost trial that wrote nothing has no row; its study trial is closed FAIL all the same (checked below)
    assert list(table.trial_id[lost]) == ([dropped["trial_id"]] if written else [])
    assert ("cannot be resumed" in out.stderr) == bool(written)
    assert (~lost).sum() == 4 and table.optuna_number.is_unique  # another trial took the lost one's place
    assert (table.status[lost] == "FAIL").all() and set(table.status[~lost]) <= {"COMPLETE", "PRUNED"}
    assert snapshotted <= set(table.trial_id[~lost])  # every trial the snapshot knew came back
    assert any(line.startswith("- 1 FAIL trial(s) lost") for line in header(load_experiment(exp))) == bool(written)
    for row in table[~lost].itertuples():
        reports = [json.loads(line) for line in (exp / row.trial_dir / "result.json").read_text().splitlines()]
        epochs = [r["epoch"] for r in reports]
        assert epochs.count(1) == 1, (row.trial_dir, epochs)  # continued from its checkpoint, not restarted
        c = config_from_dict(reports[0]["config"]["run_config"])
        for r in reports:
            assert r["knn_acc"] == score(truth, c, r["epoch"], 20, c.seed)
    study = {t.number: t for t in open_study(exp, json.loads((exp / META_FILE).read_text())).trials}
    assert {study[n].state.name for n in table.optuna_number} == set(table.status)
    # a study trial asked for after Ray's last snapshot never ran as a Ray trial: closed FAIL on resume
    assert all(study[n].state.name == "FAIL" for n in set(study) - set(table.optuna_number))
    # the journal opens in optuna-dashboard (`optuna-dashboard runs/NAME/optuna.journal`): its own loader and API
    storage = get_storage(str(exp / "optuna.journal"))
    (summary,) = storage.get_all_studies()
    assert summary.study_name == "s" and len(storage.get_all_trials(summary._study_id)) == len(study)
    app = optuna_dashboard.wsgi(storage)

    def get(path):
        environ, status = {"PATH_INFO": path}, []
        setup_testing_defaults(environ)
        body = b"".join(app(environ, lambda s, headers, *_: status.append(s)))
        assert status == ["200 OK"], (path, status)
        return json.loads(body)

    assert [s["study_name"] for s in get("/api/studies")["study_summaries"]] == ["s"]
    trials = get(f"/api/studies/{summary._study_id}")["trials"]
    assert sorted(t["number"] for t in trials) == sorted(study)
    assert {t["state"] for t in trials} == {t.state.name.capitalize() for t in study.values()}
    # a resume with another truth is refused
    other = tmp_path / "other.yaml"
    other.write_text(TRUTH.replace("0.12", "0.2"))
    again = run([*cmd[:6], str(other), *cmd[7:]], 300, "the refusal of another truth")
    assert again.returncode == 2 and "surrogate" in again.stderr.splitlines()[-1]
