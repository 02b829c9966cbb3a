"""The search end to end on CPU: ASHA prunes, the study tells the truth, a non-finite trial fails
without stopping the search, a database's study has one owner. (A SIGKILLed search's resume is tested
with the surrogate in tests/test_surrogate.py.) Ray runs on 127.0.0.2 (loopback only); the first
test reads the session's shared smoke search (conftest.py, Ray on 127.0.0.5)."""

import json
import sys
from pathlib import Path

import children
import optuna
import pandas as pd
import pytest
import yaml

from uclser_tune.config import config_from_dict, load_config
from uclser_tune.search.results import META_FILE, load_best_config, open_study
from uclser_tune.search.study import OWNER

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


def test_database_study_non_finite_trial_fails_a_stranger_is_refused_and_the_grid_resumes(tmp_path, tiny_store):
    """A search whose study lives in a database (``--storage-url``): a non-finite trial fails alone; a
    second experiment with the same name meeting that study (another cluster, another --storage-path)
    is refused before it writes anything; the owner's re-run resumes the grid."""
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
    # another experiment of the same name in the same database: one error line naming the owner, exit 2
    stranger = children.run(search(tmp_path / "cluster", "--storage-url", url, space=path, name="nan"), None,
                            "the refusal of a second experiment")
    errors = [line for line in stranger.stderr.splitlines() if line.startswith("error:")]
    assert stranger.returncode == 2 and len(errors) == 1, stranger.stderr[-3000:]
    assert "belongs to another experiment" in errors[0] and str(exp) in errors[0]
    assert "Traceback" not in stranger.stderr and not (tmp_path / "cluster" / "runs" / "nan").exists()
    # the owner's re-run resumes the grid: the FAILed cell runs again, the COMPLETE one does not
    run(search(tmp_path, "--storage-url", url, space=path, name="nan"))
    owner = json.loads((exp / META_FILE).read_text())[OWNER]
    assert optuna.load_study(study_name="nan", storage=url).user_attrs[OWNER] == owner
    table = pd.read_parquet(exp / "trials.parquet")
    assert sorted(table.param_variant) == ["diverges", "diverges", "fine"]
    assert sorted(t.state.name for t in study_of(exp).trials) == ["COMPLETE", "FAIL", "FAIL"]
