"""Is Ray's saved experiment state in an experiment dir usable for a resume?

Ray snapshots an experiment as three files per driver session (``experiment_state-<s>.json``,
``searcher-state-<s>.pkl``, ``search_gen_state-<s>.json``) and copies them into the experiment dir
non-atomically; a kill during that copy leaves a truncated newest snapshot, and Ray's restore then
crashes on it. The search gives Ray ``storage_fs()``, which lets only whole, loadable snapshot files
into the experiment dir (``atomic_fs``). For a dir written without it (or damaged otherwise), a broken
newest session is set aside (``broken_state/``) so Ray resumes from the previous good one, and a dir
with no usable snapshot is refused with a message instead of silently starting a new Ray experiment on
top of the old Optuna study.

The snapshot a resume restores decides which trials come back (``restored_trials``). Ray copies trial
dirs and snapshots into the experiment dir in one background copy while it goes on, so a trial started
shortly before a kill can have a dir there but no place in the last whole snapshot: Ray cannot resume it
and samples another in its place. Such a dir is marked lost (``mark_lost_trials``), and the searcher
closes its study trial FAIL, so the results table and the study say what happened to it.

Trial checkpoints: Ray is told to keep them all (``CheckpointConfig(num_to_keep=None)``), so it never
deletes one that a snapshot names, whatever the snapshot period. The driver deletes them instead, once a
snapshot is on disk whole (``CheckpointPruner``, run by ``storage_fs`` after each experiment state
lands): per trial it keeps the checkpoint that state names, the one before it, and every newer one
(written since, named by no snapshot yet). A resume from any snapshot on disk therefore finds the
checkpoint it names, and a finished trial ends with its last two checkpoints.

A trial that Ray retries in the same driver session (its node died) restarts its driver-side logger
files (``result.json``, ``progress.csv``) from their copies in the experiment dir, which are only as new
as the last snapshot: the results since then would be lost. ``LogsBeforeRetry`` copies the trial's
logger files into the experiment dir first.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs
from ray.tune import Callback

from uclser_tune.search.atomic_fs import atomic_local_fs, remove_temporaries

log = logging.getLogger(__name__)
BROKEN_DIR = "broken_state"
TUNER_FILE = "tuner.pkl"
LOST_NOTE = "lost: "
SESSION_FILES = {"experiment_state-{}.json": json.loads, "searcher-state-{}.pkl": pickle.loads,
                 "search_gen_state-{}.json": pickle.loads}
CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")  # Ray's trial checkpoint dirs


def storage_fs() -> pyarrow.fs.FileSystem:
    """Ray's ``storage_filesystem`` for the search: atomic writes, a snapshot file that does not load
    never replaces the previous one, and each experiment state on disk prunes the checkpoints it no
    longer needs (``CheckpointPruner``)."""
    checks = {template.format("*"): load for template, load in SESSION_FILES.items()}
    return atomic_local_fs({**checks, TUNER_FILE: pickle.loads},
                           after={"experiment_state-*.json": CheckpointPruner()})


def named_checkpoint(runtime_json: str) -> str | None:
    """The checkpoint (a path; its last two parts are the trial dir and the checkpoint dir) that a Ray
    restore of this trial would use: the latest one its checkpoint manager holds, or None."""
    manager = json.loads(runtime_json)["checkpoint_manager"]  # Ray's cloudpickle fallback, hex-encoded
    latest = pickle.loads(bytes.fromhex(manager["value"])).latest_checkpoint_result
    return latest.checkpoint.path if latest is not None else None


def stale_checkpoints(trial_dir: Path, named: str) -> list[Path]:
    """Checkpoint dirs of ``trial_dir`` that a resume can no longer need when a whole snapshot names
    ``named``: all older than the newest one before it (newer ones are kept: no snapshot names them yet)."""
    index = int(CHECKPOINT.match(named).group(1))
    older = sorted((int(m.group(1)), p) for p in trial_dir.iterdir()
                   if (m := CHECKPOINT.match(p.name)) and int(m.group(1)) < index)
    return [p for _, p in older[:-1]]


class CheckpointPruner:
    """Run after an experiment state has landed whole in the experiment dir, with what its check loaded:
    deletes each trial's stale checkpoints (``stale_checkpoints``). Only trials whose entry changed since
    the previous state are looked at, so a snapshot costs nothing per trial that has finished."""

    def __init__(self) -> None:
        self._seen: set[int] = set()  # hashes of the trial entries already pruned for

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckpointPruner)

    def __hash__(self) -> int:
        return hash(CheckpointPruner)

    def __reduce__(self):  # a trial worker's copy starts empty (and never sees an experiment state)
        return CheckpointPruner, ()

    def __call__(self, path: str, state: dict) -> None:
        exp_dir = Path(path).parent
        seen = set()
        for _, runtime_json in state["trial_data"]:
            key = hash(runtime_json)
            seen.add(key)
            if key in self._seen:
                continue
            named = named_checkpoint(runtime_json)
            if named is None:
                continue
            trial_dir = exp_dir / Path(named).parent.name  # the trial dir here, even if the experiment moved
            if not trial_dir.is_dir():
                continue
            for stale in stale_checkpoints(trial_dir, Path(named).name):
                shutil.rmtree(stale, ignore_errors=True)
        self._seen = seen


class StateError(RuntimeError):
    """The experiment dir holds a search that cannot be resumed; the message says why and what to do."""


def _readable(path: Path, load) -> bool:
    try:
        load(path.read_bytes())
    except Exception:  # noqa: BLE001 - any failure to load means a truncated or corrupt file
        return False
    return True


def sessions(exp_dir: Path) -> list[str]:
    """Ray driver sessions with a snapshot in ``exp_dir``, oldest first (their names sort by time)."""
    prefix, suffix = "experiment_state-", ".json"
    return sorted(p.name[len(prefix):-len(suffix)] for p in exp_dir.glob(f"{prefix}*{suffix}"))


def broken_files(exp_dir: Path, session: str) -> list[Path]:
    """Files of one session's snapshot that do not load (its experiment state must exist)."""
    out = []
    for template, load in SESSION_FILES.items():
        path = exp_dir / template.format(session)
        if (path.exists() or template.startswith("experiment_state")) and not _readable(path, load):
            out.append(path)
    return out


def prepare_resume(exp_dir: Path) -> list[str]:
    """Make the newest good snapshot the one Ray resumes from; return what was done, as messages.

    Raises StateError when Ray's tuner file is unreadable or no session's snapshot loads."""
    if not _readable(exp_dir / TUNER_FILE, pickle.loads):
        raise StateError(f"{exp_dir / TUNER_FILE} is unreadable (truncated by a kill?); the experiment cannot be "
                         f"resumed: use another --name to start a new one")
    notes = []
    if n := remove_temporaries(exp_dir):
        notes.append(f"removed {n} partial file(s) that a killed copy into {exp_dir} left")
    for session in reversed(sessions(exp_dir)):
        broken = broken_files(exp_dir, session)
        if not broken:
            return notes
        (exp_dir / BROKEN_DIR).mkdir(exist_ok=True)
        for template in SESSION_FILES:
            path = exp_dir / template.format(session)
            if path.exists():
                path.rename(exp_dir / BROKEN_DIR / path.name)
        notes.append(f"Ray's snapshot of session {session} is unreadable ({', '.join(p.name for p in broken)}: "
                     f"the driver was probably killed while writing it); moved to {BROKEN_DIR}/ and resuming "
                     f"from the previous snapshot")
    raise StateError(f"{exp_dir}: no readable Ray experiment snapshot (experiment_state-*.json) to resume from"
                     + (f" ({'; '.join(notes)})" if notes else "")
                     + "; trials of the killed run cannot be resumed: use another --name to start a new experiment")


@dataclass(frozen=True)
class RestoredTrial:
    """A trial in the Ray snapshot that a resume restores."""

    optuna_number: int | None
    status: str  # Ray's: PENDING, RUNNING and PAUSED ones run again; TERMINATED and ERROR ones do not
    logdir: str

    @property
    def live(self) -> bool:
        return self.status not in ("TERMINATED", "ERROR")


def restored_trials(exp_dir: Path) -> dict[str, RestoredTrial]:
    """Ray's trials, by Ray trial id, in the newest snapshot: the one Ray restores (after ``prepare_resume``)."""
    newest = exp_dir / f"experiment_state-{sessions(exp_dir)[-1]}.json"
    out = {}
    for trial_json, _ in json.loads(newest.read_text())["trial_data"]:
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = RestoredTrial(trial["config"].get("optuna_number"), trial["status"],
                                               trial["relative_logdir"])
    return out


def mark_lost_trials(exp_dir: Path, restored: dict[str, RestoredTrial]) -> list[str]:
    """Write ``error.txt`` (read into the results table) in every trial dir the restored snapshot does not
    know; return what was done, as messages."""
    known = {trial.logdir for trial in restored.values()}
    notes = []
    for params in sorted(exp_dir.glob("*/params.json")):
        trial_dir = params.parent
        if trial_dir.name in known or (trial_dir / "error.txt").exists():
            continue
        number = json.loads(params.read_text()).get("optuna_number")
        (trial_dir / "error.txt").write_text(
            f"{LOST_NOTE}started after the last whole snapshot of a killed driver session, so Ray cannot resume "
            f"it; its study trial (number {number}) is closed FAIL and a new trial is sampled in its place\n")
        notes.append(f"{trial_dir.name} (study trial {number}) was started after the killed session's last "
                     f"snapshot and cannot be resumed: marked lost (FAIL); a new trial takes its place")
    # a trial that checkpointed but whose params.json no snapshot copied yet: no table row, said here
    for trial_dir in sorted({p.parent for p in exp_dir.glob("*/checkpoint_*")
                             if not (p.parent / "params.json").exists()}):
        if trial_dir.name in known or (trial_dir / "error.txt").exists():
            continue
        (trial_dir / "error.txt").write_text(
            f"{LOST_NOTE}started after the last whole snapshot of a killed driver session (its checkpoints "
            f"reached the experiment dir, its params.json did not), so Ray cannot resume it; its study trial "
            f"is closed FAIL and a new trial is sampled in its place\n")
        notes.append(f"{trial_dir.name} was started after the killed session's last snapshot and wrote only "
                     f"checkpoints: its study trial is closed FAIL and a new trial takes its place")
    return notes


class LogsBeforeRetry(Callback):
    """Before Ray retries a failed trial, bring its driver-side logger files (``trial.local_path``) into
    its dir in the experiment dir, through the storage filesystem: Ray's JSON and CSV loggers restart a
    retried trial's files from the experiment dir's copies, which the periodic snapshot may not have
    updated since the trial's last results."""

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        local = trial.local_path
        if local and Path(local).is_dir():
            pyarrow.fs.copy_files(local, trial.storage.trial_fs_path,
                                  destination_filesystem=trial.storage.storage_filesystem)
