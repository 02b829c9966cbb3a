"""Open an experiment dir: the trials table (rebuilt when stale), the Optuna study, the ASHA rungs.

Reads only what the search wrote (``search.json``, the study, ``trials.parquet`` or the trial dirs), so
a running or killed experiment is analysed as far as it got.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml

from uclser_tune.search import results


class AnalysisError(Exception):
    """The experiment dir cannot be analysed (the message names the path and what is missing)."""


@dataclass
class Experiment:
    path: Path
    meta: dict[str, Any]
    space: dict[str, Any] | None  # the space YAML, None when the file has moved
    table: pd.DataFrame
    study: optuna.Study
    max_epochs: int
    rungs: list[int]  # ASHA milestones (epochs), the last one is max_epochs
    asha: dict[str, Any] | None  # grace_period and reduction_factor the search ran with; None: no ASHA
    table_source: str  # "trials.parquet" or "rebuilt from trial dirs"
    notes: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool((self.table["status"] == "RUNNING").any())


def asha_milestones(grace_period: int, reduction_factor: float, max_epochs: int) -> list[float]:
    """ASHA's milestones as Ray computes them (``AsyncHyperBandScheduler``'s one bracket, ``_Bracket``):
    grace * rf^k for k < int(log(max_t / grace) / log(rf) + 1), smallest first. A trial is compared at a
    milestone when its epoch count first reaches it."""
    n = int(np.log(max_epochs / grace_period) / np.log(reduction_factor) + 1)
    return [grace_period * reduction_factor ** k for k in range(n)]


def asha_rungs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """Epochs where ASHA compares trials: the first epoch at or after each milestone (none is past
    max_epochs), plus max_epochs itself."""
    milestones = asha_milestones(grace_period, reduction_factor, max_epochs)
    return sorted({*(math.ceil(m) for m in milestones), max_epochs})


def rung_reached(epochs_run: pd.Series, rungs: list[int]) -> pd.Series:
    """The last rung each trial reached ("e4"), or "< e1" for one that stopped before the first."""
    return epochs_run.map(lambda n: f"e{max(r for r in rungs if r <= n)}" if n >= rungs[0]
                          else f"< e{rungs[0]}")


def _table_is_stale(exp_dir: Path, meta: dict[str, Any]) -> bool:
    parquet = exp_dir / "trials.parquet"
    if not parquet.exists():
        return True
    newer_than = list(exp_dir.glob("*/result.json"))
    if meta["storage"].startswith("journal:"):
        newer_than.append(exp_dir / meta["storage"].removeprefix("journal:"))
    built = parquet.stat().st_mtime
    return any(p.exists() and p.stat().st_mtime > built for p in newer_than)


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Everything the analysis needs; AnalysisError when the dir is not an experiment with kNN results."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise AnalysisError(f"{exp_dir}: no such directory")
    meta_path = exp_dir / results.META_FILE
    if not meta_path.exists():
        raise AnalysisError(f"{exp_dir}: not an experiment dir (no {results.META_FILE})")
    meta = json.loads(meta_path.read_text())
    notes = []
    if _table_is_stale(exp_dir, meta):
        table, source = results.trials_table(exp_dir), "rebuilt from trial dirs"
    else:
        table, source = pd.read_parquet(exp_dir / "trials.parquet"), "trials.parquet"
    if table.empty or table["last_knn"].isna().all():
        raise AnalysisError(f"{exp_dir}: no trial has reported a kNN accuracy yet")
    space_path = Path(meta["space"])
    space = yaml.safe_load(space_path.read_text()) if space_path.exists() else None
    if space is None:
        notes.append(f"space file {space_path} not found: ASHA settings unknown, "
                     "only the final epoch is a rung")
    max_epochs = int(meta["overrides"].get("train.epochs") or (space or {}).get("epochs")
                     or table["max_epochs"].max())
    asha = meta["asha"] if "asha" in meta else (space or {}).get("asha")  # the command line's, else the file's
    rungs = (asha_rungs(int(asha["grace_period"]), asha["reduction_factor"], max_epochs) if asha
             else [max_epochs])
    return Experiment(exp_dir, meta, space, table, results.open_study(exp_dir, meta), max_epochs, rungs, asha,
                      source, notes)
