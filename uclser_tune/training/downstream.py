"""Downstream evaluation, as in the paper and the reference code: linear evaluation, fine-tuning and the supervised-from-scratch baseline.

One call, :func:`run_task`, trains a new linear classifier on an encoder's h for one of three tasks:

- ``linear``: frozen pre-trained encoder, train on the noisy ``pretrain`` split, validate on ``val``;
- ``finetune_noisy``: all weights trainable, same data;
- ``finetune_clean``: all weights trainable, train on 85 % of the clean ``val`` split, validate on the
  other 15 % (disjoint, unlike the reference's overlapping split).

``encoder_state=None`` starts from a random encoder: the supervised baseline the paper compares against.
A pre-trained encoder comes from the run's best-val-kNN checkpoint by default, as in the reference
(:func:`run_encoder`; the last epoch's is the other choice), and every result records which one.
Every task tests on ``test`` each epoch and reports the test score of the best-*val* epoch; test never
selects anything. The single-run CLI and the retrain command call this same function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from uclser_tune.config import RunConfig
from uclser_tune.data.store import FeatureStore
from uclser_tune.data.tensors import ClipTensors
from uclser_tune.evaluation.metrics import accuracy, balanced_accuracy
from uclser_tune.evaluation.patches import embed_patches
from uclser_tune.models import Classifier, build_encoder
from uclser_tune.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from uclser_tune.training.runtime import (
    amp_dtype,
    autocast,
    batches,
    lr_milestones,
    resolve_device,
    set_threads,
    use_channels_last,
)
from uclser_tune.views.sampling import gather_patches, randint_below

TASKS = ("linear", "finetune_noisy", "finetune_clean")
# The pre-training checkpoints of a run dir a downstream task can start from; 'best' (best val kNN) is
# the reference's choice and the default everywhere.
CHECKPOINT_FILES = {"best": "best.pt", "last": CHECKPOINT_FILE}

# The columns of DownstreamResult.to_row(), in order, with what each means (the CLI prints this).
ROW_COLUMNS: dict[str, str] = {
    "task": "linear | finetune_noisy | finetune_clean",
    "init": "pretrained (the run's encoder) or random (supervised from scratch)",
    "checkpoint": "pre-training checkpoint of the encoder: best (best val kNN, the default, as the reference), "
                  "last, none (random init) or given (weights passed without a checkpoint)",
    "checkpoint_epoch": "pre-training epoch of that checkpoint (0 for none and given)",
    "encoder": "encoder name",
    "width": "encoder width multiplier",
    "seed": "run seed (model init, patch starts, batch order, clean split)",
    "epochs": "downstream epochs",
    "lr": "initial SGD lr (linear_lr or finetune_lr)",
    "batch_size": "clips per batch",
    "frozen_bn": "encoder BN in eval mode while training (linear with downstream.freeze_bn)",
    "train_clips": "clips trained on",
    "test_bacc": "balanced test accuracy at the best-val epoch (the headline number)",
    "best_epoch": "epoch with the best val balanced accuracy (ties: earliest)",
    "val_bacc": "val balanced accuracy at best_epoch",
    "test_acc": "micro test accuracy at best_epoch",
    "test_bacc_last": "balanced test accuracy at the last epoch",
    "test_bacc_mean_last": "mean balanced test accuracy over the last min(5, epochs) epochs",
    "seconds": "wall time of the task",
}


class NoTrainingClipsError(ValueError):
    """The task's training split is empty or too small (e.g. a curated set without a noisy split)."""


class DownstreamLossError(RuntimeError):
    """The cross-entropy became NaN or infinite; the task stops."""

    def __init__(self, task: str, epoch: int, lr: float, cfg: RunConfig):
        self.task, self.epoch = task, epoch
        super().__init__(f"non-finite cross-entropy in {task} epoch {epoch} (encoder={cfg.model.encoder}, "
                         f"lr={lr}, batch_size={cfg.downstream.batch_size}, precision={cfg.train.precision}, "
                         f"seed={cfg.seed})")


@dataclass
class DownstreamResult:
    task: str
    init: str
    test_bacc: float
    best_epoch: int
    val_bacc: float
    test_bacc_last: float
    test_bacc_mean_last: float
    test_acc: float
    frozen_bn: bool
    history: list[dict[str, Any]]
    encoder: str
    width: float
    seed: int
    epochs: int
    lr: float
    batch_size: int
    train_clips: int
    seconds: float
    state: dict[str, torch.Tensor] = field(repr=False)  # the trained Classifier's weights (CPU), for saving
    checkpoint: str = "given"
    checkpoint_epoch: int = 0

    @classmethod
    def from_history(cls, history: list[dict[str, Any]], **run: Any) -> DownstreamResult:
        """Summarise per-epoch metrics: the epoch is chosen on val balanced accuracy only."""
        best = max(range(len(history)), key=lambda i: (history[i]["val_bacc"], -i))
        tail = [m["test_bacc"] for m in history[-min(5, len(history)):]]
        b = history[best]
        return cls(test_bacc=b["test_bacc"], best_epoch=b["epoch"], val_bacc=b["val_bacc"],
                   test_bacc_last=history[-1]["test_bacc"], test_bacc_mean_last=sum(tail) / len(tail),
                   test_acc=b["test_acc"], history=history, **run)

    def to_row(self) -> dict[str, Any]:
        """Flat record for CSV tables: everything needed to reproduce the number, no history."""
        return {key: getattr(self, key) for key in ROW_COLUMNS}


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train_idx, val_idx): per class round(fraction · n) clips held out, but every class
    with ≥ 2 clips keeps at least one on each side (a singleton class stays in train). Sorted indices."""
    labels = torch.as_tensor(labels).long().cpu()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    grouped = perm[torch.sort(labels[perm], stable=True).indices]  # clips by class, random order within
    counts = torch.bincount(labels)
    first = torch.cumsum(counts, 0) - counts
    cls = labels[grouped]
    rank = torch.arange(len(labels)) - first[cls]
    n_val = torch.floor(fraction * counts + 0.5).long().clamp(min=1)
    n_val = torch.minimum(n_val, counts - 1).clamp(min=0)
    held = rank < n_val[cls]
    return grouped[~held].sort().values, grouped[held].sort().values


def clip_predictions(patch_logits: torch.Tensor, clip_index: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Clip class = argmax of the mean softmax over the clip's patches, as the reference code predicts a clip."""
    probs = patch_logits.float().softmax(1)
    sums = torch.zeros(n_clips, probs.shape[1], device=probs.device).index_add_(0, clip_index, probs)
    counts = torch.bincount(clip_index, minlength=n_clips).clamp(min=1)
    return (sums / counts[:, None]).argmax(1)


def encoder_state_of(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder weights of a pre-training state (its "encoder.*" keys, prefix stripped)."""
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise ValueError("the state's model has no 'encoder.*' weights: not a pre-training state")
    return weights


class PretrainedEncoder(NamedTuple):
    """Encoder weights and the pre-training checkpoint they come from (recorded with every result)."""

    weights: dict[str, torch.Tensor]
    checkpoint: str  # a key of CHECKPOINT_FILES
    epoch: int


def run_encoder(run_dir: str | Path, checkpoint: str = "best") -> PretrainedEncoder:
    """The encoder of a pre-training run dir's ``best.pt`` (best val kNN) or ``checkpoint.pt`` (last)."""
    if checkpoint not in CHECKPOINT_FILES:
        raise ValueError(f"unknown checkpoint {checkpoint!r}; allowed: {', '.join(CHECKPOINT_FILES)}")
    path = Path(run_dir) / CHECKPOINT_FILES[checkpoint]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {checkpoint} checkpoint in this run dir; has pre-training run?")
    state = load_checkpoint(path)
    return PretrainedEncoder(encoder_state_of(state), checkpoint, int(state["epoch"]))


def task_splits(task: str, store: FeatureStore, cfg: RunConfig,
                dtype: torch.dtype = torch.float32) -> tuple[ClipTensors, ClipTensors, ClipTensors]:
    """(train, val, test) clips of a task."""
    test = store.splits["test"].to_torch(dtype=dtype)
    clean = store.splits["val"].to_torch(dtype=dtype)
    if task == "finetune_clean":
        train_idx, val_idx = stratified_split(clean.labels, cfg.downstream.clean_val_fraction, cfg.seed)
        if not len(train_idx) or not len(val_idx):
            raise NoTrainingClipsError(f"{task}: the clean 'val' split of {store.path} has {len(clean)} clips; "
                                       "too few to hold out a validation part")
        return clean.subset(train_idx), clean.subset(val_idx), test
    noisy = store.splits["pretrain"]
    if not len(noisy.lengths):
        raise NoTrainingClipsError(f"{task} trains on the noisy 'pretrain' split, which is empty in {store.path} "
                                   "(a curated set without noisy labels); only finetune_clean applies here")
    return noisy.to_torch(dtype=dtype), clean, test


def evaluate(model: nn.Module, clips: ClipTensors, mean: float, std: float, cfg: RunConfig,
             dtype: torch.dtype | None) -> tuple[float, float]:
    """(balanced accuracy, micro accuracy) of clip predictions from every hop-spaced patch."""
    logits, clip_index = embed_patches(model, clips, mean, std, patch=cfg.views.patch_frames, hop=cfg.eval.patch_hop,
                                       batch_size=cfg.eval.batch_size, amp_dtype=dtype)
    pred = clip_predictions(logits, clip_index, len(clips))
    return balanced_accuracy(clips.labels, pred), accuracy(clips.labels, pred)


def run_task(task: str, cfg: RunConfig, store: FeatureStore,
             encoder_state: PretrainedEncoder | dict[str, torch.Tensor] | None = None,
             progress: Callable[[int, int], None] | None = None) -> DownstreamResult:
    """Train and evaluate one downstream task for ``cfg.downstream.epochs`` epochs.

    ``encoder_state``: a :class:`PretrainedEncoder` (see :func:`run_encoder`; its checkpoint is recorded),
    bare encoder weights (see :func:`encoder_state_of`; recorded as 'given'), or None for a random encoder
    (the supervised baseline). ``progress(batches_done, batches_total)`` is called after every batch.
    """
    if isinstance(encoder_state, PretrainedEncoder):
        encoder_state, source = encoder_state.weights, (encoder_state.checkpoint, encoder_state.epoch)
    else:
        source = ("none", 0) if encoder_state is None else ("given", 0)
    if task not in TASKS:
        raise ValueError(f"unknown downstream task {task!r}; allowed: {', '.join(TASKS)}")
    if task == "linear" and encoder_state is None:
        raise ValueError("linear evaluation needs a pre-trained encoder_state; a frozen random encoder "
                         "is not the baseline (use a finetune task with encoder_state=None)")
    began = time.perf_counter()
    d = cfg.downstream
    set_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    train, val, test = (c.to(device) for c in task_splits(task, store, cfg, getattr(torch, cfg.data.store_dtype)))
    linear = task == "linear"
    frozen_bn = linear and d.freeze_bn
    if len(train) < (1 if frozen_bn else 2):
        raise NoTrainingClipsError(f"{task}: {len(train)} training clip(s); BatchNorm in train mode needs at least 2")

    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.model.encoder, cfg.model.width)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    encoder.requires_grad_(not linear)
    model = Classifier(encoder, len(store.classes)).to(device)
    channels_last = use_channels_last(cfg.train, device, cfg.model.encoder)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = d.linear_lr if linear else d.finetune_lr
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=d.momentum,
                                weight_decay=d.weight_decay)
    milestones = lr_milestones(d.lr_milestones, d.epochs)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    dtype = amp_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start_gen = torch.Generator(device=device).manual_seed(cfg.seed + 3)
    order_gen = torch.Generator().manual_seed(cfg.seed + 4)
    patch, room = cfg.views.patch_frames, (train.lengths - cfg.views.patch_frames).clamp(min=0)
    mean, std = float(store.mean), float(store.std)

    history: list[dict[str, Any]] = []
    for epoch in range(1, d.epochs + 1):
        started = time.perf_counter()
        model.train()
        if frozen_bn:
            encoder.eval()
        starts = randint_below(room + 1, start_gen)
        parts = batches(torch.randperm(len(train), generator=order_gen).to(device), d.batch_size, not frozen_bn)
        loss_sum, seen = torch.zeros((), device=device), 0
        for b, idx in enumerate(parts):
            x = gather_patches(train.frames, train.offsets[idx], starts[idx], patch).float()
            x = ((x - mean) / std).unsqueeze(1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(x)  # a frozen encoder builds no graph: nothing before fc requires grad
            loss = nn.functional.cross_entropy(logits.float(), train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
            if progress is not None:
                progress(b + 1, len(parts))
        mean_loss = loss_sum.item() / seen
        if not math.isfinite(mean_loss):
            raise DownstreamLossError(task, epoch, lr, cfg)
        epoch_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_bacc, val_acc = evaluate(model, val, mean, std, cfg, dtype)
        test_bacc, test_acc = evaluate(model, test, mean, std, cfg, dtype)
        history.append({"epoch": epoch, "loss": mean_loss, "lr": epoch_lr, "val_bacc": val_bacc, "val_acc": val_acc,
                        "test_bacc": test_bacc, "test_acc": test_acc, "seconds": time.perf_counter() - started})
    return DownstreamResult.from_history(
        history, task=task, init="random" if encoder_state is None else "pretrained", frozen_bn=frozen_bn,
        checkpoint=source[0], checkpoint_epoch=source[1],
        encoder=cfg.model.encoder, width=cfg.model.width, seed=cfg.seed, epochs=d.epochs, lr=lr,
        batch_size=d.batch_size, train_clips=len(train), seconds=time.perf_counter() - began,
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
