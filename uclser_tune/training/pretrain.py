"""Contrastive pre-training: the one library call behind the CLI, every search trial and retraining.

The caller passes a validated :class:`RunConfig`, a feature store and a ``report`` callback; the loop
calls ``report(metrics, state)`` after every epoch with a checkpointable ``state``. The single-run CLI
writes that state to its run dir, the Ray trainable wraps it in a ``tune.Checkpoint``: neither adds
anything to training. Resuming from a state continues bit-for-bit on CPU (RNG states included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from uclser_tune.config import RunConfig, TrainConfig, config_from_dict
from uclser_tune.data.store import FeatureStore
from uclser_tune.data.tensors import ClipTensors
from uclser_tune.evaluation.patches import evaluate_knn
from uclser_tune.losses import nt_xent
from uclser_tune.models import ContrastiveModel, ProjectionHead, build_encoder
from uclser_tune.training.runtime import (
    amp_dtype,
    autocast,
    batches,
    device_name,
    lr_milestones,
    precision_name,
    resolve_device,
    set_threads,
    use_channels_last,
)
from uclser_tune.views.pipeline import ViewPipeline

Report = Callable[[dict[str, Any], dict[str, Any]], None]
LR_REFERENCE_BATCH = 128  # the paper's batch size, for which its lr 0.03 was chosen (train.lr_scaling='linear')


class NonFiniteLossError(RuntimeError):
    """The contrastive loss became NaN or infinite; the run stops without writing a checkpoint."""

    def __init__(self, epoch: int, cfg: RunConfig):
        self.epoch, self.config = epoch, cfg.to_dict()
        t = cfg.train
        super().__init__(
            f"non-finite NT-Xent loss in epoch {epoch} (encoder={cfg.model.encoder}, lr={t.lr}, tau={t.tau}, "
            f"batch_size={t.batch_size}, precision={t.precision}, seed={cfg.seed}); config: {self.config}"
        )


@dataclass
class PretrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] | None = None

    def _knn(self) -> list[tuple[int, float]]:
        return [(m["epoch"], m["knn_acc"]) for m in self.history if "knn_acc" in m]

    @property
    def best_knn(self) -> float:
        """Best val kNN balanced accuracy over the evaluated epochs (scope: best epoch)."""
        return max((v for _, v in self._knn()), default=math.nan)

    @property
    def last_knn(self) -> float:
        """Val kNN balanced accuracy at the last evaluated epoch (scope: last epoch)."""
        knn = self._knn()
        return knn[-1][1] if knn else math.nan


def build_model(cfg: RunConfig) -> ContrastiveModel:
    encoder = build_encoder(cfg.model.encoder, cfg.model.width)
    return ContrastiveModel(encoder, ProjectionHead(encoder.embed_dim, cfg.model.proj_hidden, cfg.model.proj_dim))


def pretrain_clips(store: FeatureStore, dtype: torch.dtype = torch.float32) -> tuple[str, ClipTensors]:
    """The clips pre-training sees. A curated set with no noisy split (e.g. the drum set) pre-trains on
    its clean train clips, labels unused."""
    name = "pretrain" if len(store.splits["pretrain"].lengths) else "val"
    return name, store.splits[name].to_torch(dtype=dtype)


def pretrain(
    cfg: RunConfig,
    store: FeatureStore,
    report: Report | None = None,
    resume: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PretrainResult:
    """Pre-train ``cfg.model`` with SimCLR on the store's pretrain clips for ``cfg.train.epochs`` epochs.

    ``resume`` is a state from an earlier ``report`` call; training continues after its epoch.
    ``progress(batches_done, batches_total)`` is called after every batch (for progress bars).
    """
    t = cfg.train
    set_threads(t.num_threads)
    device = resolve_device(t.device)
    torch.manual_seed(cfg.seed)

    frames_dtype = getattr(torch, cfg.data.store_dtype)  # float16 halves the resident frames; views compute in fp32
    split_name, clips = pretrain_clips(store, frames_dtype)
    clips = clips.to(device)
    val = store.splits["val"].to_torch(dtype=frames_dtype).to(device)
    if len(clips) < 2:
        raise ValueError(f"pre-training needs at least 2 clips; the store's {split_name} split has {len(clips)}")
    batch_size = min(t.batch_size, len(clips))
    pipeline = ViewPipeline.from_config(cfg.views, store.mean, store.std)

    model = build_model(cfg).to(device)
    channels_last = use_channels_last(t, device, cfg.model.encoder)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=scaled_lr(t, batch_size), momentum=t.momentum,
                                weight_decay=t.weight_decay)
    milestones = lr_milestones(t.lr_milestones, t.epochs)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=t.lr_gamma)
    dtype = amp_dtype(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    view_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    order_gen = torch.Generator().manual_seed(cfg.seed + 2)
    result = PretrainResult()
    start_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        view_gen.set_state(resume["rng"]["views"].to("cpu"))
        order_gen.set_state(resume["rng"]["order"])
        torch.set_rng_state(resume["rng"]["torch"])
        result.history = list(resume["history"])
        start_epoch = resume["epoch"] + 1

    for epoch in range(start_epoch, t.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(clips), generator=order_gen).to(device)
        # The last partial batch is kept, as in the reference; a tail of one clip is not (no negatives:
        # its NT-Xent is 0, the step would be weight decay and momentum only). Reshuffled every epoch.
        parts = batches(order, batch_size, drop_single=True)[: t.max_batches_per_epoch or None]
        n_batches, seen = len(parts), 0
        loss_sum = torch.zeros((), device=device)
        fallbacks_before = pipeline.stats.get("fallbacks", 0)
        for b, idx in enumerate(parts):
            with torch.no_grad():
                v1, v2 = pipeline(clips, idx, view_gen)
                x = torch.cat([v1, v2])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                _, z = model(x)
            loss = nt_xent(z[: len(idx)], z[len(idx) :], t.tau)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()
            seen += len(idx)
            if progress is not None:
                progress(b + 1, n_batches)
        mean_loss = loss_sum.item() / n_batches
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(epoch, cfg)
        seconds = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": mean_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "clips": seen,
            "clips_per_s": seen / seconds,
            "epoch_seconds": seconds,
            "sampling_fallbacks": pipeline.stats.get("fallbacks", 0) - fallbacks_before,
            "precision": precision_name(dtype),  # what ran: 'auto' resolves per machine
            "channels_last": channels_last,
            "device": device_name(device),
        }
        scheduler.step()
        if epoch % cfg.eval.every == 0 or epoch == t.epochs:
            eval_started = time.perf_counter()
            knn = evaluate_knn(
                model, val, store.mean, store.std, k=cfg.eval.knn_k, hop=cfg.eval.patch_hop,
                batch_size=cfg.eval.batch_size, amp_dtype=dtype,
            )
            metrics.update(knn_acc=knn["balanced_acc"], knn_micro=knn["micro_acc"], knn_top3=knn["top3_acc"],
                           knn_seconds=time.perf_counter() - eval_started)
        result.history.append(metrics)
        result.state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"views": view_gen.get_state(), "order": order_gen.get_state(), "torch": torch.get_rng_state()},
            "history": list(result.history),
            "config": cfg.to_dict(),
            "norm": {"mean": float(store.mean), "std": float(store.std)},
            "pretrain_split": split_name,
            "precision": precision_name(dtype),
            "channels_last": channels_last,
        }
        if report is not None:
            report(metrics, result.state)
    return result


def scaled_lr(t: TrainConfig, batch_size: int) -> float:
    """The initial SGD lr: ``t.lr``, or with ``lr_scaling='linear'`` ``t.lr × batch_size / 128`` (the
    batch actually used), so that a batch-size search keeps the lr per sample at the paper's."""
    return t.lr * batch_size / LR_REFERENCE_BATCH if t.lr_scaling == "linear" else t.lr


def config_of(state: dict[str, Any]) -> RunConfig:
    """The validated config a checkpoint was trained with."""
    return config_from_dict(state["config"])
