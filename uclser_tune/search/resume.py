"""Resume checks: may this command continue the experiment in its dir, and from what?

Re-running a search's command resumes its experiment: Ray restores its last snapshot and the searcher
its Optuna study. Both must then be driven with what the experiment was started with (``search.json``),
and a study whose trials Ray saved no state for cannot be resumed at all; either is refused with one
message that says what differs and how to go on.
"""

from __future__ import annotations

from pathlib import Path

from uclser_tune.search.results import META_FILE, read_meta
from uclser_tune.search.state import StateError

# The format of the searcher's saved state (Ray pickles the searcher into the experiment), recorded in
# search.json. Format 2 is the searcher over Ray's public Searcher interface; an experiment whose
# search.json names no format was written by the searcher before it and cannot be restored.
SEARCHER_STATE = 2


def check_resume(exp_dir: Path, meta: dict) -> dict | None:
    """A resumed experiment must be re-run with what it was started with: Ray's restored experiment keeps
    its trial count, the restored searcher its seeded sampler and its study storage. Returns the
    experiment's search.json, or None for a new experiment."""
    if not (exp_dir / META_FILE).exists():
        return None
    old = read_meta(exp_dir)
    if old.get("searcher_state") != meta.get("searcher_state"):
        raise StateError(f"{exp_dir} was started by another version of uclser_tune, whose saved searcher state this "
                         f"one cannot restore; use another --name to start a new experiment (this one's trials.parquet "
                         f"and Optuna study stay readable)")
    if old["space_digest"] != meta["space_digest"]:
        raise StateError(f"{exp_dir} was started with another space file ({old['space']}, or it changed since); "
                         f"use another --name to start a new experiment")
    keys = sorted(k for k in {*old["overrides"], *meta["overrides"]} if old["overrides"].get(k) != meta["overrides"].get(k))
    if keys:
        was, now = ({k: o.get(k, "unset") for k in keys} for o in (old["overrides"], meta["overrides"]))
        raise StateError(f"{exp_dir} was started with other options (--set/--data/--max-epochs/--smoke): {was}, "
                         f"now {now}; re-run with the original ones, or use another --name")
    changed = {k: (old[k], meta[k]) for k in ("num_samples", "sampler_seed", "asha", "surrogate", "storage")
               if k in old and old[k] != meta[k]}
    if changed:
        raise StateError(f"{exp_dir} was started with " + ", ".join(f"{k} {was} (now {now})" for k, (was, now)
                                                                   in changed.items())
                         + "; a resumed search keeps them: re-run with the original values (for storage: "
                           "--storage-url, or UCLSER_OPTUNA_URL on a cluster), or use another --name")
    return old


def restorable(exp_dir: Path, meta: dict) -> tuple[bool, list[str]]:
    """Whether Ray has a saved experiment in ``exp_dir`` to restore, and the warnings of making it usable
    (``state.prepare_resume``). A dir without one whose study already has trials is refused (killed at
    start-up?): a new Ray experiment on top of that study would mix two searches."""
    from ray import tune

    from uclser_tune.search import results
    from uclser_tune.search.state import prepare_resume, storage_fs

    resume = tune.Tuner.can_restore(str(exp_dir), storage_filesystem=storage_fs())
    notes: list[str] = []
    try:
        if resume:
            notes = prepare_resume(exp_dir)
        elif (exp_dir / META_FILE).exists():
            n = len(results.open_study(exp_dir, meta).trials)
            if n:
                raise StateError(f"{exp_dir}: the Optuna study has {n} trials but Ray saved no experiment state "
                                 f"to resume them (killed at start-up?); use another --name to start a new experiment")
    except KeyError:  # no study of that name yet: nothing to resume
        pass
    return resume, notes
