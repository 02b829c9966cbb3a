"""What the search prints while it runs: one compact line per trial event and a status line.

Ray's reporter prints a status table with each trial's whole config, which says little at a glance
and nothing about the search as a whole. This is a Ray Tune ``Callback`` instead (the driver calls it
on every trial event): a line when a trial starts (its searched parameters in short form), at every
epoch (kNN), and when it ends (what ASHA decided, or why it failed); and, at most every
``status_every_s`` and at the end, where the search stands: trials done of the total, running,
stopped early and failed, the best kNN so far with its trial, the time elapsed and a rough ETA.
Trials are named by their Optuna trial number (``#n``), as in the study and the results table.
``--verbose`` gives Ray's own output instead.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback

from uclser_tune.dotted import get_key

if TYPE_CHECKING:
    from uclser_tune.search.spaces import SearchSpace

END_STATES = ("TERMINATED", "ERROR")


def short(value: Any) -> str:
    """A parameter value in a few characters: 3 significant digits, ops joined by '>', on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ">".join(map(str, value)) or "none"
    return str(value)


def clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


class Console(Callback):
    """``keys``: the run-config keys the space searches (dotted), each with the key whose truth it is
    searched under (or None); a trial shows the ones it searched."""

    def __init__(self, keys: list[tuple[str, str | None]], total: int, status_every_s: float = 30.0,
                 out: TextIO | None = None):
        self.keys = keys
        self.total = total
        self.status_every_s = status_every_s
        self.out = out
        self.started = time.monotonic()
        self.last_status = self.started
        self.best: tuple[float, str, int] | None = None
        self.last_text = ""

    # Ray pickles the run config (with its callbacks) for a resume; the clock starts again there
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "out": None}

    def setup(self, **info: Any) -> None:
        self.started = self.last_status = time.monotonic()

    def _print(self, text: str) -> None:
        print(f"[{clock(time.monotonic() - self.started):>7}] {text}", file=self.out or sys.stdout, flush=True)

    @staticmethod
    def name(trial) -> str:
        number = trial.config.get("optuna_number")
        return f"#{number}" if number is not None else str(trial.trial_id)

    def params(self, trial) -> str:
        run_config = trial.config.get("run_config", {})
        shown = []
        for key, when in self.keys:
            try:
                if when is None or get_key(run_config, when):
                    shown.append(f"{key.rsplit('.', 1)[-1]}={short(get_key(run_config, key))}")
            except (KeyError, TypeError):
                continue
        return " ".join(shown)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print(f"{self.name(trial)} start  {self.params(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        knn, epoch = result.get("knn_acc"), result.get("epoch")
        if knn is None or epoch is None:
            return
        if math.isfinite(knn) and (self.best is None or knn > self.best[0]):
            self.best = (knn, self.name(trial), epoch)
        self._print(f"{self.name(trial)} epoch {epoch}/{result.get('max_epochs', '?')} kNN {knn:.3f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        epoch, budget = last.get("epoch", 0), last.get("max_epochs", 0)
        if last.get("error"):
            decision = f"failed: {last['error']}"
        elif epoch < budget:
            decision = f"stopped early by ASHA at epoch {epoch}/{budget}"
        else:
            decision = f"done, {epoch} epochs"
        knn = last.get("knn_acc")
        self._print(f"{self.name(trial)} {decision}" + (f" (kNN {knn:.3f})" if knn is not None else ""))
        self._status(trials, ending=trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print(f"{self.name(trial)} failed: {first_error_line(trial)}")
        self._status(trials, ending=trial, failed=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last_status >= self.status_every_s:
            self._status(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._status(trials)

    def _status(self, trials: list, ending=None, failed: bool = False) -> None:
        """``ending``: a trial whose end is being reported (Ray sets its status after the callbacks)."""
        self.last_status = time.monotonic()
        states = {t.trial_id: ("ERROR" if failed else "TERMINATED") if t is ending else t.status for t in trials}
        text = status_line(trials, states, self.total, self.best, self.last_status - self.started)
        if text != self.last_text:
            self._print(text)
        self.last_text = text


def make_console(space: SearchSpace, total: int, verbose: bool) -> Console | None:
    """The compact console showing the parameters the space searches (and the views.ops candidates);
    None with ``--verbose``, which keeps Ray's own status output."""
    if verbose:
        return None
    keys = [(k, d.when) for k, d in space.params.items()]
    keys += [(k, None) for k in sorted({k for v in space.variants.values() for k in v})]
    if space.candidates:
        keys.append(("views.ops", None))
    return Console(keys, total)


def first_error_line(trial) -> str:
    """The last line of the trial's error (the exception's message, after Ray's traceback)."""
    try:
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):
        return "see the trial's error.txt"
    return lines[-1] if lines else "see the trial's error.txt"


def status_line(trials: list, states: dict[str, str], total: int, best: tuple[float, str, int] | None,
                elapsed: float) -> str:
    """``states``: each trial's status by trial id."""
    ended = [t for t in trials if states[t.trial_id] in END_STATES]
    last = {t.trial_id: t.last_result or {} for t in trials}
    failed = sum(states[t.trial_id] == "ERROR" or bool(last[t.trial_id].get("error")) for t in ended)
    early = sum(states[t.trial_id] == "TERMINATED" and not last[t.trial_id].get("error")
                and last[t.trial_id].get("epoch", 0) < last[t.trial_id].get("max_epochs", 0) for t in ended)
    running = sum(states[t.trial_id] == "RUNNING" and t not in ended for t in trials)
    text = (f"{len(ended)}/{total} trials done ({early} stopped early, {failed} failed), {running} running; "
            + (f"best kNN {best[0]:.3f} ({best[1]}, epoch {best[2]})" if best else "no kNN yet")
            + f"; {clock(elapsed)} elapsed")
    if ended and len(ended) < total:
        text += f", ETA ~{clock(elapsed / len(ended) * (total - len(ended)))}"
    return text
