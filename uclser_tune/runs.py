"""What a single pre-training run writes, shared by ``python -m uclser_tune.train`` and the retraining.

A run dir holds ``config.yaml``, ``metrics.csv`` (one row per epoch), TensorBoard scalars (``tb/``),
``checkpoint.pt`` (last epoch) and ``best.pt`` (best val kNN); ``RunDir`` writes them and continues an
interrupted run. ``check_data`` is the cheap data check every command does before it writes anything.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from uclser_tune.config import ConfigError, DataConfig, RunConfig
from uclser_tune.data.fsd import read_dataset

METRIC_FIELDS = ["epoch", "loss", "lr", "clips_per_s", "epoch_seconds", "sampling_fallbacks",
                 "knn_acc", "knn_micro", "knn_top3", "precision", "channels_last"]


def check_data(data: DataConfig) -> None:
    """Raise DatasetError unless ``data.root`` has the FSDnoisy18k layout (or is the embedded synthetic set,
    generated on first use). Cheap (the metadata only), so every CLI calls it before it writes anything."""
    if data.root != "synthetic":
        read_dataset(Path(data.root).expanduser())


class RunDir:
    """What a single run writes, and how it continues after an interruption."""

    def __init__(self, path: Path, cfg: RunConfig, resume: bool):
        from uclser_tune.training import load_checkpoint

        self.path, self.cfg = path, cfg
        self.last = path / "checkpoint.pt"
        self.state: dict[str, Any] | None = None
        if self.last.exists():
            if not resume:
                raise ConfigError(f"{path} already holds a run; pass --resume to continue it or choose another --out")
            self.state = load_checkpoint(self.last)
            if self.state["config"] != cfg.to_dict():
                raise ConfigError(f"{path}: the config differs from the one this run started with "
                                  f"({path / 'config.yaml'}); resume with the same config")
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(cfg.to_yaml())
        if self.state is not None:
            self._trim_metrics(self.state["epoch"])
        self.best = max((m["knn_acc"] for m in self.state["history"] if "knn_acc" in m), default=-1.0) \
            if self.state else -1.0
        self._tb = None

    def tensorboard(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        """Metrics first, the checkpoint last: an interruption in between leaves a metrics row ahead of
        the checkpoint, which resuming drops (see ``_trim_metrics``), never a checkpoint without its row."""
        from uclser_tune.training import save_checkpoint

        new = not (self.path / "metrics.csv").exists() or metrics["epoch"] == 1
        with open(self.path / "metrics.csv", "w" if new else "a", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(metrics)
        tb = self.tensorboard()
        for key, value in metrics.items():
            if key != "epoch" and not isinstance(value, str):  # 'precision' is in metrics.csv
                tb.add_scalar(f"pretrain/{key}", value, metrics["epoch"])
        tb.flush()
        if metrics.get("knn_acc", -1.0) > self.best:
            self.best = metrics["knn_acc"]
            save_checkpoint(state, self.path / "best.pt")
        save_checkpoint(state, self.last)

    def _trim_metrics(self, epoch: int) -> None:
        """Drop metrics rows of epochs after the checkpoint (they are run again)."""
        path = self.path / "metrics.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    knn = f"  kNN {m['knn_acc']:.4f} (micro {m['knn_micro']:.4f}, top3 {m['knn_top3']:.4f})" if "knn_acc" in m else ""
    return (f"epoch {m['epoch']:>4}/{epochs}  loss {m['loss']:.4f}  lr {m['lr']:.4g}  "
            f"{m['clips_per_s']:.0f} clips/s{knn}")

