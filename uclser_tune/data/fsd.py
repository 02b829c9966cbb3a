"""Reader for the FSDnoisy18k on-disk layout (any label set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_COLUMNS = ("fname", "label", "aso_id", "manually_verified", "noisy_small")
TEST_COLUMNS = ("fname", "label", "aso_id")
SPLITS = ("pretrain", "val", "test")


class DatasetError(ValueError):
    """The data folder does not have the FSDnoisy18k layout; the message says what is missing."""


@dataclass
class FsdDataset:
    """Tables per split (columns fname, path, label, label_id); class id = index in sorted labels."""

    root: Path
    classes: list[str]
    splits: dict[str, pd.DataFrame]


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"missing metadata file {path}")
    table = pd.read_csv(path, dtype={"fname": str, "label": str})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    return table


def read_dataset(root: str | Path) -> FsdDataset:
    """Read ``ROOT/FSDnoisy18k.{audio_train,audio_test,meta}``: pretrain = ``manually_verified == 0``
    train rows, val = ``== 1``, test = test.csv."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    dirs = {s: root / f"FSDnoisy18k.audio_{s}" for s in ("train", "test")}
    for d in (*dirs.values(), root / "FSDnoisy18k.meta"):
        if not d.is_dir():
            raise DatasetError(f"missing folder {d} (expected the FSDnoisy18k layout under {root})")
    train = _read_csv(root / "FSDnoisy18k.meta" / "train.csv", TRAIN_COLUMNS)
    test = _read_csv(root / "FSDnoisy18k.meta" / "test.csv", TEST_COLUMNS)
    for name, table in (("train.csv", train), ("test.csv", test)):
        if table["label"].isna().any():
            rows = [int(i) + 2 for i in table.index[table["label"].isna()][:5]]
            raise DatasetError(f"{name}: empty label on line(s) {rows}")
    flags = pd.to_numeric(train["manually_verified"], errors="coerce")
    if not flags.isin([0, 1]).all():
        rows = [int(i) + 2 for i in train.index[~flags.isin([0, 1])][:5]]
        raise DatasetError(f"train.csv: manually_verified must be 0 or 1; not so on line(s) {rows}")
    classes = sorted(set(train["label"]))
    unseen = sorted(set(test["label"]) - set(classes))
    if unseen:
        raise DatasetError(f"labels in test.csv not seen in train.csv: {', '.join(unseen)}")
    ids = {c: i for i, c in enumerate(classes)}

    def table(rows: pd.DataFrame, folder: Path) -> pd.DataFrame:
        out = rows[["fname", "label"]].reset_index(drop=True).copy()
        out["path"] = [str(folder / f) for f in out["fname"]]
        out["label_id"] = out["label"].map(ids).astype(np.int64)
        return out

    verified = flags.astype(int)
    splits = {
        "pretrain": table(train[verified == 0], dirs["train"]),
        "val": table(train[verified == 1], dirs["train"]),
        "test": table(test, dirs["test"]),
    }
    return FsdDataset(root, classes, splits)
