"""The experiment's results table (``trials.parquet``): the contract ``analysis/`` reads.

Built from what is on disk (Ray's per-trial ``result.json`` and the Optuna study), so it can be
rebuilt at any time, also while a search is still running or after it was killed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from uclser_tune.config import OP_NAMES, RunConfig, config_from_dict

META_FILE = "search.json"
META_KEYS = ("space", "space_digest", "overrides", "storage", "study_name")


class ExperimentError(ValueError):
    """An experiment dir without a usable search.json; the message names the file and what is wrong."""


def read_meta(exp_dir: Path) -> dict[str, Any]:
    """The experiment's search.json, checked: retraining, the analysis and a resume all start from it."""
    path = exp_dir / META_FILE
    if not path.exists():
        raise ExperimentError(f"{exp_dir}: not an experiment dir (no {META_FILE}); run a search first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExperimentError(f"{path}: unreadable ({err}); it is written by the search, not by hand") from None
    missing = [k for k in META_KEYS if k not in meta] if isinstance(meta, dict) else list(META_KEYS)
    if missing:
        raise ExperimentError(f"{path}: {missing[0]}: missing; expected the keys {', '.join(META_KEYS)} "
                              f"that the search writes")
    return meta


def open_study(exp_dir: Path, meta: dict[str, Any]) -> optuna.Study:
    """The experiment's study, for reading; KeyError (as optuna's) when there is none yet. A missing
    journal file is not opened: Optuna's journal backend would create it, and a reader writes nothing."""
    url = meta["storage"]
    if url.startswith("journal:") and not (exp_dir / url.removeprefix("journal:")).exists():
        raise KeyError(f"{exp_dir}: no Optuna study yet (no {url.removeprefix('journal:')})")
    return optuna.load_study(study_name=meta["study_name"], storage=storage_from(url, exp_dir))


def storage_from(url: str, exp_dir: Path, driver: bool = False) -> optuna.storages.BaseStorage:
    """The journal file in the experiment dir (``journal:<file>``, the default) or an RDB URL. ``driver``:
    the storage of the search driver's searcher, the journal's one writer (``DriverJournal``)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = str(exp_dir / url.removeprefix("journal:"))
        return JournalStorage(DriverJournal(path) if driver else JournalFileBackend(path))
    return optuna.storages.RDBStorage(url)


class DriverJournal(optuna.storages.journal.BaseJournalBackend):
    """Optuna's journal file as the search driver appends to it: one ``write`` of whole lines per append.

    Optuna's ``JournalFileBackend`` takes a lock file (a symlink created, renamed and deleted) and fsyncs
    for every append, and the storage appends once per suggested parameter. Here the driver is the
    journal's only writer (it holds the experiment's lock, ``search.lock``; trials, the analysis and the
    dashboard only read), so the lock file is not needed. Without fsync a killed driver loses nothing
    (the kernel keeps what was written), which is what resume covers; a power cut is not covered, as for
    the rest of the experiment dir (``atomic_fs``). The lines are Optuna's format, and readers use its
    own backend, which skips a line still being written."""

    def __init__(self, path: str) -> None:
        from optuna.storages.journal import JournalFileBackend

        self.path = path
        self.reader = JournalFileBackend(path)  # creates the file if it does not exist

    def read_logs(self, log_number_from: int):
        return self.reader.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with open(self.path, "ab") as f:
            f.write(text.encode())


def _reports(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary(cfg: RunConfig) -> dict[str, Any]:
    v = cfg.views
    return {
        "encoder": cfg.model.encoder, "width": cfg.model.width, "tau": cfg.train.tau,
        "batch_size": cfg.train.batch_size, "sampling": v.sampling,
        "separation": v.separation if v.sampling == "separation" else 0,
        "mixback": v.mixback, "mixback_alpha": v.mixback_alpha if v.mixback else 0.0,
        "mixback_energy_adjust": v.mixback_energy_adjust if v.mixback else False,
        "ops": ">".join(v.ops), "order_mode": v.order, "seed": cfg.seed,
        **{f"pos_{op}": (v.ops.index(op) + 1 if op in v.ops else 0) for op in OP_NAMES},
    }


def trials_table(exp_dir: str | Path) -> pd.DataFrame:
    """One row per trial: status (from the study), sampled params (``param_*``), the effective config
    summary, kNN per reported epoch (``knn_e<n>``), best/last kNN, epochs run, wall time, node."""
    exp_dir = Path(exp_dir)
    meta = read_meta(exp_dir)
    study = {t.number: t for t in open_study(exp_dir, meta).get_trials(deepcopy=False)}
    rows = []
    for params_file in sorted(exp_dir.glob("*/params.json")):
        trial_dir = params_file.parent
        config = json.loads(params_file.read_text())
        reports = _reports(trial_dir)
        trial_id = reports[-1]["trial_id"] if reports else trial_dir.name.removeprefix("trial_")
        number = config.get("optuna_number")
        frozen = study.get(number)
        knn = {int(r["epoch"]): r["knn_acc"] for r in reports if math.isfinite(r.get("knn_acc", math.nan))}
        cfg = config_from_dict(config["run_config"])
        errored = (trial_dir / "error.txt").exists() or any("error" in r for r in reports)
        row = {
            "trial_id": trial_id, "optuna_number": number,
            "status": frozen.state.name if frozen else ("FAIL" if errored else "RUNNING"),
            "epochs_run": max(knn, default=0), "max_epochs": cfg.train.epochs,
            "best_knn": max(knn.values(), default=math.nan),
            "best_epoch": max(knn, key=knn.get) if knn else 0,
            "last_knn": knn[max(knn)] if knn else math.nan,
            "wall_s": reports[-1]["time_total_s"] if reports else 0.0,
            "node": reports[-1].get("node", "") if reports else "",
            "node_ip": reports[-1].get("node_ip", "") if reports else "",
            "retried_from_epoch": max((r.get("resumed_from", 0) for r in reports), default=0),
            "error": next((r["error"] for r in reports if "error" in r), "") or (
                (trial_dir / "error.txt").read_text().rstrip()[-500:] if (trial_dir / "error.txt").exists() else ""),
            "config_yaml": cfg.to_yaml(), "trial_dir": trial_dir.name,
            **_summary(cfg),
            **{f"param_{k}": v for k, v in (frozen.params if frozen else {}).items()},
            **{f"knn_e{e}": knn[e] for e in sorted(knn)},
            "knn_history": [knn[e] for e in sorted(knn)],
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("optuna_number", na_position="last").reset_index(drop=True)
    return table


def best_trial(table: pd.DataFrame) -> pd.Series | None:
    """Scope: best val kNN at the final rung, i.e. the last epoch of trials that ran their whole budget."""
    done = table[table["status"] == "COMPLETE"]
    return None if done.empty else done.loc[done["last_knn"].idxmax()]


def write_results(exp_dir: str | Path) -> dict[str, Any]:
    """Write trials.parquet / trials.csv / best_config.yaml and return paths and counts."""
    exp_dir = Path(exp_dir)
    table = trials_table(exp_dir)
    table.to_parquet(exp_dir / "trials.parquet", index=False)
    table.drop(columns=["knn_history", "config_yaml"]).to_csv(exp_dir / "trials.csv", index=False)
    out: dict[str, Any] = {"trials": str(exp_dir / "trials.parquet"), "n": len(table),
                           "status": table["status"].value_counts().to_dict() if len(table) else {}}
    best = best_trial(table) if len(table) else None
    if best is not None:
        meta = {"scope": "best val kNN balanced accuracy at the final rung (last epoch of complete trials)",
                "trial_id": best["trial_id"], "optuna_number": int(best["optuna_number"]),
                "last_knn": float(best["last_knn"]), "best_knn": float(best["best_knn"])}
        text = "# " + json.dumps(meta) + "\n" + best["config_yaml"]
        (exp_dir / "best_config.yaml").write_text(text)
        (exp_dir / "best_trial.json").write_text(json.dumps(meta, indent=1))
        out["best_config"] = str(exp_dir / "best_config.yaml")
        out["best"] = meta
    return out


def top_table(table: pd.DataFrame, n: int = 5) -> str:
    cols = ["optuna_number", "status", "epochs_run", "last_knn", "best_knn", "encoder", "tau", "batch_size",
            "sampling", "mixback", "ops"]
    shown = table.sort_values(["status", "last_knn"], ascending=[True, False]) if len(table) else table
    shown = shown[shown["status"] == "COMPLETE"].head(n) if len(shown) else shown
    return shown[cols].to_markdown(index=False, floatfmt=".4f") if len(shown) else "(no complete trial)"


def load_best_config(exp_dir: str | Path) -> RunConfig:
    return config_from_dict(yaml.safe_load((Path(exp_dir) / "best_config.yaml").read_text()))
