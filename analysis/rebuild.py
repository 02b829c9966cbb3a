"""Rebuild an experiment dir from a committed ``trials.parquet``, so a findings folder can be analysed
again without the machine that ran its search.

    python -m analysis.rebuild results/augs_v3 runs/augs_v3 --space augs.yaml --epochs 8 \
        --asha 2 2 --startup-design 16
    python -m analysis runs/augs_v3 --out results/augs_v3

The Optuna study is rebuilt trial by trial: each row's ``param_*`` values are replayed through the
space's define-by-run (so every parameter gets the distribution the search gave it), its kNN per
epoch becomes the intermediate values and its status the trial state. ``search.json`` records the
space (a path relative to the repository), the epoch budget, ASHA and the start-up design; what the
analysis reads of a trial comes from ``trials.parquet`` itself, copied unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from uclser_tune.search.spaces import SPACES_DIR, load_space


def _value(v: Any) -> Any:
    """A parquet cell as the plain Python value Optuna stored."""
    if hasattr(v, "item"):
        v = v.item()
    return int(v) if isinstance(v, float) and v.is_integer() else v


def rebuild(findings: Path, exp_dir: Path, space_name: str, epochs: int, asha: tuple[int, float] | None,
            startup_design: int, sampler_seed: int | None = None) -> Path:
    space = load_space(space_name)
    table = pd.read_parquet(findings / "trials.parquet").sort_values("optuna_number")
    exp_dir.mkdir(parents=True, exist_ok=False)
    meta = {"space": str(space.path.relative_to(SPACES_DIR.parent)), "space_digest": space.digest,
            "overrides": {"train.epochs": epochs}, "storage": "journal:optuna.journal",
            "study_name": exp_dir.name, "sampler_seed": sampler_seed, "num_samples": len(table),
            "asha": {"grace_period": asha[0], "reduction_factor": asha[1]} if asha else None,
            "startup_design": startup_design, "rebuilt_from": str(findings)}
    study = optuna.create_study(study_name=exp_dir.name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                storage=JournalStorage(JournalFileBackend(str(exp_dir / "optuna.journal"))))
    ints = {k for k, d in space.params.items() if d.kind == "int"} | {
        f"{op}_{p}" for op, ps in space.magnitudes.items() for p, d in ps.items() if d.kind == "int"}
    for _, row in table.iterrows():
        params = {c.removeprefix("param_"): _value(v) for c, v in row.items()
                  if c.startswith("param_") and v is not None and not (isinstance(v, float) and math.isnan(v))}
        params = {k: int(v) if k in ints or k.startswith("order_d") else v for k, v in params.items()}
        study.enqueue_trial(params)
        trial = study.ask()
        assert trial.number == row["optuna_number"], (trial.number, row["optuna_number"])
        space.define_by_run(trial)
        assert trial.params == params, (trial.params, params)
        for epoch, knn in enumerate(list(row["knn_history"]), start=1):
            trial.report(float(knn), epoch)
        if row["status"] == "COMPLETE":
            study.tell(trial, float(row["last_knn"]))
        else:
            study.tell(trial, state=TrialState.PRUNED if row["status"] == "PRUNED" else TrialState.FAIL)
    (exp_dir / "search.json").write_text(json.dumps(meta, indent=1))
    shutil.copy(findings / "trials.parquet", exp_dir / "trials.parquet")
    later = (exp_dir / "optuna.journal").stat().st_mtime + 10
    os.utime(exp_dir / "trials.parquet", (later, later))  # newer than the journal: not rebuilt
    return exp_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("findings", type=Path, help="a folder with the search's trials.parquet")
    p.add_argument("exp_dir", type=Path, help="the experiment dir to create")
    p.add_argument("--space", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--asha", type=float, nargs=2, metavar=("GRACE", "REDUCTION"))
    p.add_argument("--startup-design", type=int, default=0)
    p.add_argument("--sampler-seed", type=int)
    a = p.parse_args(argv)
    asha = (int(a.asha[0]), a.asha[1]) if a.asha else None
    print(rebuild(a.findings, a.exp_dir, a.space, a.epochs, asha, a.startup_design, a.sampler_seed))


if __name__ == "__main__":
    main()
