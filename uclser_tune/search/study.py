"""One Optuna study per experiment.

The study's name is the experiment dir's name, so two experiments called ``augs`` (two clusters, or a
laptop and a cluster) that share one database (``--storage-url``, ``UCLSER_OPTUNA_URL``) would share
one study: each driver would sample from the other's trials, and a resume would close the other
driver's running trials as lost. So every experiment has an id (``experiment_id`` in its search.json,
kept across resumes, moves and copies), the study records the id of the experiment that created it
(a study user attribute), and a driver whose id differs is refused before it writes anything.
"""

from __future__ import annotations

import platform
import uuid
from pathlib import Path
from typing import Any

import optuna

from uclser_tune.search.results import open_study, storage_from
from uclser_tune.search.state import StateError

OWNER = "experiment_id"
OWNER_PLACE = "experiment"  # host:path of the experiment dir that created the study, for the message


def experiment_id(old_meta: dict[str, Any] | None) -> str:
    """A resumed experiment keeps its id; a new one gets a fresh one."""
    return (old_meta or {}).get(OWNER) or uuid.uuid4().hex


def check_owner(exp_dir: Path, meta: dict[str, Any], resuming: bool) -> None:
    """Refuse when the storage holds a study of this name that another experiment owns; reads only."""
    try:
        study = open_study(exp_dir, meta)
    except KeyError:
        return
    _check(study, meta, resuming)


def claim(exp_dir: Path, meta: dict[str, Any], resuming: bool) -> None:
    """Create the study and record this experiment as its owner, or check the owner of the one there. The
    database's unique study name decides between two new drivers that get here at once: the one that did
    not create the study is refused."""
    storage = storage_from(meta["storage"], exp_dir)
    try:
        study = optuna.create_study(study_name=meta["study_name"], storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=meta["study_name"], storage=storage)
        _check(study, meta, resuming)
        if study.user_attrs.get(OWNER) == meta[OWNER]:
            return
    study.set_user_attr(OWNER, meta[OWNER])
    study.set_user_attr(OWNER_PLACE, f"{platform.node()}:{exp_dir}")


def _check(study: optuna.Study, meta: dict[str, Any], resuming: bool) -> None:
    owner = study.user_attrs.get(OWNER)
    if owner == meta[OWNER] or (owner is None and resuming):  # a study from before ids: its own experiment's
        return
    place = study.user_attrs.get(OWNER_PLACE, "an experiment that did not record itself")
    raise StateError(f"the Optuna study {meta['study_name']!r} in {_where(meta['storage'])} belongs to another "
                     f"experiment ({place}); use another --name, or another --storage-url")


def _where(url: str) -> str:
    """The storage without a password (a URL may carry one, although ~/.pgpass is the advice)."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
