"""What the experiments share: where results go, the CSV writer, and the commit that produced a result."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path
from typing import Any

from uclser_tune.config import RunConfig, config_from_dict, load_overrides
from uclser_tune.search.spaces import CONFIGS_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"  # the one place for results; results/README.md is their index
# The paper's three ablation claims (claim, variant a, variant b: a beats b), which paper_effects measures
# on one draw of the synthetic data and paper_effects_draws over several.
CLAIMS = [("random>same", "default", "same"), ("default_da>no_da", "default", "no_da"),
          ("mixback>no_mixback", "default", "no_mixback")]


def cpu_small(changes: dict[str, Any]) -> RunConfig:
    """The shipped CPU setting (``search_spaces/configs/cpu_small.yaml``, as ``--config cpu_small.yaml``
    gives a search) with an experiment's own dotted-key changes on top."""
    return config_from_dict({}).replace({**load_overrides(CONFIGS_DIR / "cpu_small.yaml"), **changes})


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] | None = None) -> None:
    """``rows`` as CSV with a header: ``fields`` in that order, else the first row's keys."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields or list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def git_commit(script: str) -> str:
    """HEAD, marked when the library or the script differ from it (the runs use the working tree)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], check=False, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "uclser_tune", script)
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
