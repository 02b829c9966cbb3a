"""One driver per experiment, with two real drivers: the second is refused at once (exit 2, naming the
first one's host and pid) while the first runs trials, and the first finishes with a clean study.
A moved experiment resumes from its new place (the journal is found relative to the experiment dir).
The store goes into the object store in the trials' dtype. Ray runs on 127.0.0.3 and 127.0.0.4 (apart from
the other modules' addresses, so that modules can run at once)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from children import Child, poll_until, run

from uclser_tune.search.driver import shipped_store
from uclser_tune.search.lock import LOCK_FILE, ExperimentLock, LockError
from uclser_tune.search.results import META_FILE, open_study
from uclser_tune.search.spaces import load_space

pytestmark = pytest.mark.slow


def driver(runs, ip: str) -> list[str]:
    return [sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--smoke", "--name", "shared",
            "--num-samples", "3", "--max-epochs", "2", "--storage-path", str(runs), "--node-ip-address", ip]


@pytest.fixture(scope="module")
def two_drivers(tmp_path_factory, tiny_store):
    """Driver A runs the search; once a trial of A has reported to the study, driver B runs the same
    command (A's driver process is stopped meanwhile, so that B meets it mid-search whatever the
    machine's load)."""
    runs = tmp_path_factory.mktemp("lock") / "runs"
    exp = runs / "shared"
    first = Child(subprocess.Popen(driver(runs, "127.0.0.3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True), "driver A")
    try:
        # the study is written by A as results arrive; result.json reaches the experiment dir only at Ray's syncs
        poll_until(lambda: reported(exp), None, "a trial of driver A reporting to the study", alive=first)
        os.kill(first.proc.pid, signal.SIGSTOP)  # A stays mid-search, holding the lock, until B has tried
        try:
            held_by = (exp / LOCK_FILE).read_text().strip()
            second = run(driver(runs, "127.0.0.4"), 300, "driver B's refusal")
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)
        out = first.read_rest(None, "the end of driver A's output")
        first.wait(60, "driver A's exit")
    finally:
        if first.proc.poll() is None:
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
    return {"runs": runs, "exp": exp, "first": first.proc, "first_out": out, "second": second, "held_by": held_by}


def reported(exp) -> bool:
    if not ((exp / META_FILE).exists() and (exp / "optuna.journal").exists()):
        return False
    return any(t.intermediate_values for t in open_study(exp, json.loads((exp / META_FILE).read_text())).trials)


def test_the_second_driver_is_refused_at_once(two_drivers):
    second, first = two_drivers["second"], two_drivers["first"]
    assert second.returncode == 2, second.stderr[-3000:]
    assert two_drivers["held_by"] == f"host {platform.node()} pid {first.pid}"
    assert second.stderr.count("error:") == 1 and "Traceback" not in second.stderr
    assert f"in use by another search driver (host {platform.node()} pid {first.pid})" in second.stderr
    # at once: it stopped at the lock, before Ray, the data or the study were touched (A is frozen meanwhile,
    # so anything in B's output besides the error line would be B's own start-up)
    assert second.stderr.strip().splitlines() == [second.stderr.strip()] and not second.stdout.strip(), second


def test_the_first_driver_finishes_with_a_clean_study(two_drivers):
    exp = two_drivers["exp"]
    out = two_drivers["first_out"]
    assert two_drivers["first"].returncode == 0, out[-4000:]
    assert "kNN" in out and "'run_config': {" not in out  # the compact console: no config dicts
    table = pd.read_parquet(exp / "trials.parquet")
    assert len(table) == 3 and set(table.status) <= {"COMPLETE", "PRUNED"}
    states = {t.state for t in open_study(exp, json.loads((exp / META_FILE).read_text())).trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}, states  # none FAILed by B


def test_a_moved_experiment_resumes_into_its_own_study(two_drivers):
    """Ray's pickled searcher would name the journal at the old place, which no longer exists."""
    moved = two_drivers["runs"].parent / "elsewhere"
    shutil.move(two_drivers["runs"], moved)
    out = run(driver(moved, "127.0.0.3"), None, "the resumed search")
    assert out.returncode == 0 and "resuming experiment" in out.stderr, out.stderr[-4000:]
    assert not two_drivers["runs"].exists()
    assert len(pd.read_parquet(moved / "shared" / "trials.parquet")) == 3


def test_a_killed_holders_lock_goes_with_it(tmp_path):
    """The holder (a process of its own, with a child that inherits nothing) is SIGKILLed: the lock is free."""
    code = ("import subprocess, sys, time; from pathlib import Path; from uclser_tune.search.lock import ExperimentLock\n"
            f"with ExperimentLock(Path({str(tmp_path / 'exp')!r})):\n"
            "    child = subprocess.Popen(['sleep', '60']); print('held', flush=True); time.sleep(60)")
    child = Child(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True), "lock holder")
    holder = child.proc
    try:
        assert child.readline(120, "the holder's 'held'").strip() == "held", child.output()
        with pytest.raises(LockError, match=f"in use by another search driver \\(host .* pid {holder.pid}\\)"):
            ExperimentLock(tmp_path / "exp").__enter__()
        holder.kill()  # the driver only: its child (like Ray's processes) lives on
        child.wait(60, "the SIGKILLed holder's exit")
        with ExperimentLock(tmp_path / "exp") as lock:
            assert not lock.created and (tmp_path / "exp" / LOCK_FILE).read_text().endswith(f"pid {os.getpid()}\n")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_float16_store_travels_as_float16(tiny_store):
    space = load_space("smoke.yaml")
    shipped = shipped_store(tiny_store, space, "float16")
    for name, split in shipped.splits.items():
        assert split.frames.dtype == np.float16
        assert split.frames.nbytes * 2 == tiny_store.splits[name].frames.nbytes
    for dtype, torch_dtype in (("float16", torch.float16), ("float32", torch.float32)):
        val = shipped_store(tiny_store, space, dtype).splits["val"]
        clips = val.to_torch(dtype=torch_dtype)  # what a trial does with it: no copy of its own
        assert clips.frames.dtype == torch_dtype and clips.frames.data_ptr() == val.frames.ctypes.data
    searched = space.__class__(**{**space.__dict__, "variants": {"a": {"data.store_dtype": "float32"}}})
    assert shipped_store(tiny_store, searched, "float16").splits["val"].frames.dtype == np.float32
