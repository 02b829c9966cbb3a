"""Pre-training loop: resume gives the same next epoch, non-finite loss stops cleanly, the CLI's
checkpoints, Ctrl-C and resume."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from uclser_tune.config import config_from_dict
from uclser_tune.training import NonFiniteLossError, load_checkpoint, pretrain, save_checkpoint

SMALL = {"model": {"encoder": "resnet18", "width": 0.125, "proj_hidden": 32, "proj_dim": 16},
         "train": {"epochs": 3, "batch_size": 16, "max_batches_per_epoch": 3},
         "eval": {"knn_k": 5}, "data": {"synth_size": "tiny"}}


def small_cfg(**sections):
    data = {k: dict(v) for k, v in SMALL.items()}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


def test_resume_gives_the_same_next_epoch(tiny_store, tmp_path):
    cfg = small_cfg()
    full = pretrain(cfg, tiny_store)
    states = []
    pretrain(cfg.replace({"train.epochs": 3}), tiny_store, report=lambda m, s: states.append(
        save_checkpoint(s, tmp_path / f"e{m['epoch']}.pt")))
    resumed = pretrain(cfg, tiny_store, resume=load_checkpoint(tmp_path / "e1.pt"))
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in full.history]
    assert [m["knn_acc"] for m in resumed.history] == [m["knn_acc"] for m in full.history]
    for key, value in full.state["model"].items():
        assert torch.equal(value, resumed.state["model"][key]), key


def test_history_metrics_and_schedule(tiny_store):
    cfg = small_cfg(train={"epochs": 4}, eval={"every": 2})
    result = pretrain(cfg, tiny_store)
    assert [("knn_acc" in m) for m in result.history] == [False, True, False, True]
    assert [m["lr"] for m in result.history] == pytest.approx([0.03, 0.03, 0.03, 0.0003])  # 0.65·4, 0.85·4 → 3, 3
    assert 0 <= result.best_knn <= 1 and result.last_knn == result.history[-1]["knn_acc"]


def test_non_finite_loss_stops_without_a_checkpoint(tiny_store):
    cfg = small_cfg(train={"tau": 1e-40})  # similarities / τ overflow float32: the loss is NaN
    saved = []
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(cfg, tiny_store, report=lambda m, s: saved.append(m["epoch"]))
    assert "non-finite" in str(err.value) and "tau=1e-40" in str(err.value) and "'encoder': 'resnet18'" in str(err.value)
    assert saved == []  # the failing epoch never reached the reporter


def test_cli_writes_checkpoints_handles_ctrl_c_and_resumes(tiny_store, tmp_path):
    out = tmp_path / "run"
    cfg = small_cfg(train={"epochs": 40, "max_batches_per_epoch": 1})
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "uclser_tune.train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    done = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert 1 <= done < 40
    assert (out / "config.yaml").exists() and (out / "best.pt").exists() and list((out / "tb").iterdir())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss") and len(rows) >= done + 1

    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a run silently
    short = cmd + ["--resume", "--set", "train.epochs=40"]
    env = {**os.environ}
    finished = subprocess.run(short, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 40
    epochs = [int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, 41))  # one row per epoch: none lost or repeated across the interruption


def test_cli_rejects_bad_config(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: {tau: 0}\n")
    out = subprocess.run([sys.executable, "-m", "uclser_tune.train", "--config", str(tmp_path / "bad.yaml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "bad.yaml: train.tau" in out.stderr
