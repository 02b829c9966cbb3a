"""One Optuna study per experiment: two experiments with one name (two clusters, or a laptop and a
cluster) meeting in one database are told apart by the experiment id that the study records, and the
second is refused with exit 2 before it writes anything. The owner check itself is tested without
Ray against a by-hand study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from uclser_tune.search.state import StateError
from uclser_tune.search.study import OWNER, check_owner, claim, experiment_id

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "search_spaces" / "truths" / "augs_mixback.yaml"


def meta(db: Path, exp_id: str) -> dict:
    return {"storage": f"sqlite:///{db}", "study_name": "augs", OWNER: exp_id}


def test_a_second_experiment_is_refused_and_the_owner_passes(tmp_path):
    db = tmp_path / "optuna.db"
    a, b = meta(db, "a" * 32), meta(db, "b" * 32)
    check_owner(tmp_path / "A", a, resuming=False)  # no study yet
    claim(tmp_path / "A", a, resuming=False)
    check_owner(tmp_path / "A", a, resuming=True)
    claim(tmp_path / "A", a, resuming=True)  # its own resume
    for resuming in (False, True):
        with pytest.raises(StateError, match=r"'augs' .* belongs to another experiment \(.*:.*A\)"):
            check_owner(tmp_path / "B", b, resuming=resuming)
        with pytest.raises(StateError, match="belongs to another experiment"):
            claim(tmp_path / "B", b, resuming=resuming)
    assert optuna.load_study(study_name="augs", storage=a["storage"]).user_attrs[OWNER] == "a" * 32


def test_a_study_without_an_owner_is_claimed_by_a_resume_only(tmp_path):
    """A study written before experiments had ids (or by hand) belongs to the experiment that resumes
    it; a new experiment that meets it is refused, as is one that loses the race to create it."""
    db = tmp_path / "optuna.db"
    optuna.create_study(study_name="augs", storage=f"sqlite:///{db}").ask()
    with pytest.raises(StateError, match="did not record itself"):
        check_owner(tmp_path / "B", meta(db, "b" * 32), resuming=False)
    with pytest.raises(StateError, match="did not record itself"):
        claim(tmp_path / "B", meta(db, "b" * 32), resuming=False)
    claim(tmp_path / "A", meta(db, "a" * 32), resuming=True)
    with pytest.raises(StateError):
        check_owner(tmp_path / "B", meta(db, "b" * 32), resuming=True)


def test_an_experiment_keeps_its_id():
    assert experiment_id({OWNER: "c" * 32}) == "c" * 32
    assert experiment_id(None) != experiment_id(None) and len(experiment_id({})) == 32


@pytest.mark.slow
def test_two_experiments_with_one_name_in_one_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def search(where: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "augs.yaml", "--surrogate", str(TRUTH),
               "--name", "augs", "--storage-path", str(tmp_path / where), "--storage-url", url,
               "--node-ip-address", "127.0.0.9", "--num-samples", "2", "--max-epochs", "2",
               "--grace-period", "1", "--reduction-factor", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)

    first = search("laptop")
    assert first.returncode == 0, first.stderr[-3000:]
    second = search("cluster")
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "belongs to another experiment" in errors[0]
    assert str(tmp_path / "laptop" / "augs") in errors[0] and "Traceback" not in second.stderr
    assert not (tmp_path / "cluster" / "augs").exists()
    again = search("laptop")  # the owner resumes (nothing left to run)
    assert again.returncode == 0, again.stderr[-3000:]
    owner = json.loads((tmp_path / "laptop" / "augs" / "search.json").read_text())[OWNER]
    assert optuna.load_study(study_name="augs", storage=url).user_attrs[OWNER] == owner
