"""The search end to end on CPU: ASHA prunes, the study tells the truth, SIGKILL + re-run resumes,
a non-finite trial fails without stopping the search. Ray runs on 127.0.0.2 (loopback only); the first
test reads the session's shared smoke search (conftest.py, Ray on 127.0.0.5)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import children
import optuna
import pandas as pd
import pytest
import yaml

from uclser_tune.config import config_from_dict, load_config
from uclser_tune.search.results import META_FILE, load_best_config, open_study
from uclser_tune.search.state import LOST_NOTE

pytestmark = pytest.mark.slow


def search(tmp_path, *extra, space="smoke.yaml", name="smoke", **popen):
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", str(space), "--name", name,
           "--storage-path", str(tmp_path / "runs"), "--node-ip-address", "127.0.0.2", *extra]
    return cmd


def run(cmd, timeout=None):
    out = children.run(cmd, timeout, "the search")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def study_of(exp):
    return open_study(exp, json.loads((exp / META_FILE).read_text()))


def test_smoke_search_end_to_end(smoke_search):
    """The session's shared smoke search (conftest.py: smoke.yaml, 6 trials, sampler seed 0)."""
    exp = smoke_search.exp
    table = pd.read_parquet(exp / "trials.parquet")
    assert len(table) == 6
    counts = table["status"].value_counts().to_dict()
    assert counts.get("PRUNED", 0) >= 1 and counts.get("COMPLETE", 0) >= 1, counts  # ASHA stopped some early
    pruned = table[table.status == "PRUNED"]
    assert (pruned.epochs_run < pruned.max_epochs).all()
    assert (table[table.status == "COMPLETE"].epochs_run == 4).all()
    # the study agrees, with the pruned trials' intermediate values kept
    study = {t.number: t for t in study_of(exp).trials}
    for row in table.itertuples():
        frozen = study[row.optuna_number]
        assert frozen.state.name == row.status
        assert len(frozen.intermediate_values) == row.epochs_run
        assert frozen.intermediate_values[row.epochs_run] == pytest.approx(row.last_knn)
        if row.status == "COMPLETE":
            assert frozen.value == pytest.approx(row.last_knn)
    assert {"param_train.tau", "param_use_rrc", "knn_e1", "best_knn", "wall_s", "config_yaml"} <= set(table.columns)
    # best_config.yaml is the COMPLETE trial with the highest final kNN, found here from the study alone
    complete = [t for t in study.values() if t.state.name == "COMPLETE"]
    winner = max(complete, key=lambda t: t.value)
    row = table[table.optuna_number == winner.number].iloc[0]
    best = load_config(exp / "best_config.yaml")
    assert best.to_dict() == config_from_dict(yaml.safe_load(row.config_yaml)).to_dict()
    assert best.to_dict() == load_best_config(exp).to_dict()
    assert json.loads((exp / "best_trial.json").read_text())["optuna_number"] == winner.number
    assert best.train.epochs == 4 and best.data.synth_size == "tiny"
    assert "best config" in smoke_search.stdout and "top trials" in smoke_search.stdout
    for row in table.itertuples():  # the last two checkpoints are kept (the snapshot may point to either)
        kept = sorted(p.name for p in (exp / row.trial_dir).glob("checkpoint_*"))
        assert kept == [f"checkpoint_{i:06d}" for i in range(row.epochs_run)][-2:], (row.trial_dir, kept)


def test_sigkill_then_rerun_resumes_without_rerunning_trials(tmp_path, tiny_store):
    # ASHA (grace 1) promotes few of the 8 trials past epoch 1: the kill comes when the first reaches epoch 2
    cmd = search(tmp_path, "--num-samples", "8", name="killed")
    exp = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, done = time.time() + 300, []
    while not done and time.time() < deadline and proc.poll() is None:  # state polled, not a fixed wait
        # the study (written by the driver as results arrive) says which trials reached epoch 2; result.json
        # is copied into the experiment dir only at Ray's syncs, which may come after the search has ended
        done = ([t for t in study_of(exp).trials if 2 in t.intermediate_values]
                if (exp / META_FILE).exists() and (exp / "optuna.journal").exists() else [])
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before a trial reached epoch 2: nothing left to kill"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    assert done, "no trial reached epoch 2 before the search was killed"
    while time.time() < deadline:  # until every process of the killed session is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the killed search are still alive")
    # as if a later session had been killed while Ray copied its snapshot: an empty newest state file
    (exp / "experiment_state-9999-12-31_23-59-59.json").write_text("")
    out = run(cmd)
    assert "session 9999-12-31_23-59-59 is unreadable" in out.stderr and "resuming experiment" in out.stderr
    assert (exp / "broken_state" / "experiment_state-9999-12-31_23-59-59.json").exists()
    table = pd.read_parquet(exp / "trials.parquet")
    # a trial started after the last whole snapshot cannot come back: FAIL, marked lost, another in its place
    lost = table.error.str.startswith(LOST_NOTE)
    assert (table.status[lost] == "FAIL").all() and ("cannot be resumed" in out.stderr) == lost.any()
    assert (~lost).sum() == 8 and set(table.status[~lost]) <= {"COMPLETE", "PRUNED"}
    assert table.optuna_number.is_unique
    for trial_dir in table.trial_dir[~lost]:
        epochs = [json.loads(line)["epoch"] for line in (exp / trial_dir / "result.json").read_text().splitlines()]
        assert epochs.count(1) == 1, (trial_dir, epochs)  # never restarted from scratch
    states = [t.state for t in study_of(exp).trials]
    assert optuna.trial.TrialState.RUNNING not in states


def test_non_finite_trial_fails_and_the_search_goes_on(tmp_path, tiny_store):
    space = yaml.safe_load(Path("search_spaces/smoke.yaml").read_text())
    space.update(sampler="grid", params={"seed": {"categorical": [0]}}, ops=None, asha=None, epochs=2,
                 variants={"fine": {}, "diverges": {"train.tau": 1e-40}})
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(space))
    exp = tmp_path / "runs" / "nan"
    url = f"sqlite:///{tmp_path / 'optuna.db'}"  # --storage-url: the study lives in this database
    run(search(tmp_path, "--storage-url", url, space=path, name="nan"))
    assert json.loads((exp / META_FILE).read_text())["storage"] == url and not (exp / "optuna.journal").exists()
    assert len(optuna.load_study(study_name="nan", storage=url).trials) == 2
    table = pd.read_parquet(exp / "trials.parquet").set_index("param_variant")
    assert len(table) == 2 and table.loc["fine", "status"] == "COMPLETE"  # the grid ends cleanly, cells once
    assert table.loc["diverges", "status"] == "FAIL"
    assert "non-finite" in table.loc["diverges", "error"] and "tau=1e-40" in table.loc["diverges", "error"]
    assert not list(exp.glob("trial_*/error.txt"))  # no trial errored in Ray (GridSampler's stop() did)
    # a re-run resumes the grid: the FAILed cell runs again, the COMPLETE one does not
    run(search(tmp_path, "--storage-url", url, space=path, name="nan"))
    table = pd.read_parquet(exp / "trials.parquet")
    assert sorted(table.param_variant) == ["diverges", "diverges", "fine"]
    assert sorted(t.state.name for t in study_of(exp).trials) == ["COMPLETE", "FAIL", "FAIL"]
