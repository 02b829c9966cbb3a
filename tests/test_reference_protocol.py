"""Closer to the reference: downstream tasks start from the best-val-kNN checkpoint
(last on request) and record which; pre-training keeps the last partial batch; train.lr_scaling."""

import json

import pytest
import torch

from uclser_tune.config import ConfigError, config_from_dict
from uclser_tune.retrain import _finished
from uclser_tune.training import build_model, pretrain, run_task, save_checkpoint
from uclser_tune.training.downstream import PretrainedEncoder, run_encoder
from uclser_tune.training.pretrain import LR_REFERENCE_BATCH

BASE = {"model": {"encoder": "resnet18", "width": 0.125, "proj_hidden": 32, "proj_dim": 16},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "precision": "fp32", "num_threads": 1},
        "eval": {"knn_k": 5}, "data": {"synth_size": "tiny"}, "downstream": {"epochs": 1, "batch_size": 32}}


def cfg_with(**train):
    return config_from_dict({**BASE, "train": {**BASE["train"], **train}})


def without_seconds(history):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


@pytest.fixture
def finished_run(tmp_path, tiny_store):
    """A finished 2-epoch run dir whose best.pt (epoch 1) and checkpoint.pt (epoch 2) hold different encoders."""
    cfg = cfg_with(epochs=2)
    history = [{"epoch": 1, "loss": 4.0, "knn_acc": 0.6}, {"epoch": 2, "loss": 3.9, "knn_acc": 0.4}]
    for name, epoch, seed in (("best.pt", 1, 1), ("checkpoint.pt", 2, 2)):
        torch.manual_seed(seed)
        save_checkpoint({"epoch": epoch, "model": build_model(cfg).state_dict(), "history": history[:epoch],
                         "config": cfg.to_dict()}, tmp_path / name)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    return cfg, tmp_path


def test_run_encoder_reads_the_chosen_checkpoint(finished_run):
    _, run = finished_run
    best, last = run_encoder(run), run_encoder(run, "last")
    assert (best.checkpoint, best.epoch, last.checkpoint, last.epoch) == ("best", 1, "last", 2)
    assert not torch.equal(best.weights["conv1.weight"], last.weights["conv1.weight"])
    with pytest.raises(ValueError, match="unknown checkpoint"):
        run_encoder(run, "final")
    (run / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="best.pt"):
        run_encoder(run)


def test_train_cli_downstream_uses_the_best_checkpoint_by_default(finished_run, tiny_store):
    from uclser_tune.train import main

    cfg, run = finished_run
    expected = {which: run_task("linear", cfg, tiny_store, run_encoder(run, which)) for which in ("best", "last")}
    assert without_seconds(expected["best"].history) != without_seconds(expected["last"].history)
    for flags, which, epoch in (([], "best", 1), (["--downstream-from", "last"], "last", 2)):
        assert main(["--config", str(run / "c.yaml"), "--out", str(run), "--resume", "--linear", *flags]) == 0
        (row,) = json.loads((run / "downstream.json").read_text())
        assert (row["checkpoint"], row["checkpoint_epoch"]) == (which, epoch)
        assert without_seconds(row["history"]) == without_seconds(expected[which].history)
        header = (run / "downstream.csv").read_text().splitlines()[0].split(",")
        assert "checkpoint" in header and "checkpoint_epoch" in header


def test_results_record_their_encoder_source(finished_run, tiny_store):
    cfg, run = finished_run
    weights = run_encoder(run).weights
    given = run_task("linear", cfg, tiny_store, weights)
    scratch = run_task("finetune_clean", cfg, tiny_store)
    named = run_task("linear", cfg, tiny_store, PretrainedEncoder(weights, "best", 1))
    assert (given.checkpoint, scratch.checkpoint, named.checkpoint) == ("given", "none", "best")
    assert named.to_row()["checkpoint_epoch"] == 1
    assert without_seconds(named.history) == without_seconds(given.history)  # provenance only, same training


def test_retrain_reruns_downstream_from_another_checkpoint(tmp_path):
    job = {"dir": str(tmp_path), "init": "pretrained", "downstream_from": "best"}
    assert not _finished(job)
    (tmp_path / "result.json").write_text(json.dumps({"linear": 0.5, "linear.checkpoint": "last"}))
    assert not _finished(job) and _finished({**job, "downstream_from": "last"})
    (tmp_path / "result.json").write_text(json.dumps({"linear": 0.5}))  # no checkpoint recorded: run again
    assert not _finished(job) and not _finished({**job, "downstream_from": "last"})
    assert _finished({**job, "init": "random"})


@pytest.mark.parametrize("batch_size, expected", [(64, "all"), ("all-1", "all-1"), (16, "capped")])
def test_pretraining_keeps_the_partial_batch(tiny_store, batch_size, expected):
    n = len(tiny_store.splits["pretrain"].lengths)
    bs = n - 1 if batch_size == "all-1" else batch_size
    assert n % 64 >= 2  # the tiny set leaves a partial batch of several clips at 64
    cap = 2 if expected == "capped" else 0
    metrics = pretrain(cfg_with(batch_size=bs, max_batches_per_epoch=cap), tiny_store).history[0]
    # all clips; a tail of one clip (no negatives) is left out; max_batches_per_epoch still caps
    assert metrics["clips"] == {"all": n, "all-1": n - 1, "capped": 2 * bs}[expected]


@pytest.mark.parametrize("scaling, batch_size", [("none", 16), ("linear", 16), ("linear", 40)])
def test_lr_scaling_sets_the_optimiser_lr(tiny_store, scaling, batch_size):
    cfg = cfg_with(lr=0.03, lr_scaling=scaling, batch_size=batch_size, max_batches_per_epoch=1)
    lr = pretrain(cfg, tiny_store).history[0]["lr"]
    assert lr == pytest.approx(0.03 * (batch_size / LR_REFERENCE_BATCH if scaling == "linear" else 1))
    assert config_from_dict({}).train.lr_scaling == "none"  # the paper's default
    with pytest.raises(ConfigError, match="train.lr_scaling"):
        config_from_dict({"train": {"lr_scaling": "sqrt"}})
