"""One Optuna study per experiment: two experiments with one name (two clusters, or a laptop and a
cluster) meeting in one database are told apart by the experiment id that the study records, and the
second is refused with exit 2 before it writes anything. The owner check is tested here without
Ray against a by-hand study; the same refusal through the command, with a real search owning the
database's study, is in tests/test_search_e2e.py (the ``--storage-url`` search)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from uclser_tune.search.state import StateError
from uclser_tune.search.study import OWNER, check_owner, claim, experiment_id


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

