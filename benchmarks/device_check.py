"""Every GPU measurement this project needs, in one command that imports no Ray, Optuna or librosa.

A GPU machine comes rarely and briefly here (minutes, one command, no Ray, Optuna or librosa on its
image), so the whole CUDA check is this one script. Besides torch, numpy and pyyaml it imports tqdm
and pydantic 2 (the run config is validated by pydantic models). An image without them takes them as
wheels for its Python that travel with the command, e.g. ``pip download --only-binary :all: --no-deps
--python-version 3.12 -d wheels pydantic pydantic-core annotated-types typing-inspection
typing-extensions tqdm``, unpacked onto ``PYTHONPATH`` (not yet tried on a device image):

    python -m benchmarks.device_check --device cuda --store STORE_DIR --out OUT_DIR
    python -m benchmarks.device_check --quick --device cpu --out /tmp/dc     # CI: tiny sizes, < 1 min

It writes ``device_check.md`` and ``device_check.json`` with one section per check:

- ``views``: the batched views on the device against the per-sample NumPy reference (the default
  chain, on the pipeline's own draws), and every op rendered on the device against the CPU on the
  same draws;
- ``knn``: the blocked kNN on an FSDnoisy18k-sized bank (1,772 clips, about 11.9k patches) on the
  device against a float64 NumPy reference of the protocol and against the CPU, and its time, plus
  the evaluation forward of every patch;
- ``throughput``: the full pre-training step per encoder in fp32, bf16 and bf16 + channels_last,
  clips/s and the views' share (``benchmarks.throughput``); every row measured, run as asked;
- ``pretrain``: 3 epochs of real pre-training on a feature store that travels with the command
  (``--store``; random frames without one), the loss must fall; and 2 epochs in fp16 with the
  GradScaler, which must stay finite;
- ``resume``: 3 epochs in one go against 2 epochs, a checkpoint written and read back, and the
  third epoch resumed from it (the CUDA view generator's state included): bitwise, or the largest
  difference, in the default and in PyTorch's deterministic mode;
- ``sharing``: 4 trainer processes on one device against 1 alone: the total throughput ratio behind
  fractional GPUs per trial (every process measured, all at the same time).

Each check runs even when an earlier one fails; its error is reported in its section.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import training_step
from benchmarks.common import fsd_like_clips, timed
from uclser_tune.config import config_from_dict
from uclser_tune.data.store import FeatureStore, SplitStore
from uclser_tune.evaluation.knn import knn_predict, knn_scores
from uclser_tune.evaluation.patches import embed_patches, eval_patch_index
from uclser_tune.models import ENCODERS as ENCODER_REGISTRY
from uclser_tune.training import build_model, load_checkpoint, pretrain, save_checkpoint
from uclser_tune.views import OPS, ViewPipeline, reference

ENCODERS = tuple(ENCODER_REGISTRY)  # every registered encoder
#: configs of ``benchmarks.throughput`` in the throughput table
MODES = ("fp32", "bf16", "bf16+cl")


class Sizes:
    """Problem sizes: FSDnoisy18k-like on a GPU, tiny with ``--quick`` so that CI runs it in seconds."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.view_batch = 16 if quick else 128
        self.knn_clips = 120 if quick else 1772  # FSDnoisy18k's train_clean: ~11.9k patches
        self.knn_dim = 64 if quick else 512
        self.steps = 1 if quick else 20
        self.batch = 16 if quick else 128
        self.width = 0.125 if quick else 1.0
        self.encoders = ("vgg_like",) if quick else ENCODERS
        self.pretrain_batch = 16 if quick else 32
        self.pretrain_batches = 4 if quick else 0  # batches per epoch (0: a full pass)
        self.sharing_procs = 2 if quick else 4
        self.sharing_steps = 2 if quick else 40
        self.sharing_encoders = ("vgg_like",) if quick else ("vgg_like", "resnet18")
        self.bench_clips = 200 if quick else 2000

    def clips(self) -> Any:
        """Random FSDnoisy18k-like clips for the timed steps."""
        return fsd_like_clips(self.bench_clips, seed=0)


# ----------------------------------------------------------------------------- the checks


def check_views(device: torch.device, sz: Sizes) -> dict[str, Any]:
    """Default chain vs the NumPy reference on the device's own draws; each op device vs CPU."""
    clips = fsd_like_clips(200, seed=1)
    mean, std = -2.0, 1.0
    pipe = ViewPipeline(["rrc", "compression", "noise"], {}, mean, std)
    dev_clips = clips.to(device)
    idx = torch.arange(sz.view_batch, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    params = pipe.sample(dev_clips, idx, gen)
    views = pipe.render(dev_clips, params).cpu()
    frames, offsets = clips.frames.numpy(), clips.offsets.numpy()
    ref_diff = max(
        float(np.abs(views[row, 0].numpy() - reference.render_view(
            frames, offsets, int(params.clips[row]), reference.view_of(params, row), mean, std)).max())
        for row in range(len(params.starts)))
    op_diff = {}
    for name in OPS:
        op = OPS[name]()
        x = torch.randn(sz.view_batch, 101, 96, generator=torch.Generator().manual_seed(2)) - 2.0
        p = op.sample(x.shape, torch.Generator().manual_seed(3), torch.device("cpu"))
        on_dev = op.masked(x.to(device), {k: v.to(device) for k, v in p.items()})
        op_diff[name] = float((on_dev.cpu() - op.masked(x, p)).abs().max())
    gen = torch.Generator(device=device).manual_seed(1)
    seconds = timed(lambda: pipe(dev_clips, idx, gen), repeat=3 if sz.quick else 20, sync=device)
    tol = 1e-4
    return {
        "ok": ref_diff < tol and max(op_diff.values()) < tol,
        "views": 2 * sz.view_batch, "max_abs_diff_vs_reference": ref_diff, "tolerance": tol,
        "max_abs_diff_device_vs_cpu_per_op": op_diff, "views_ms_per_batch": seconds * 1e3,
    }


def knn_bank(clips: Any, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch embeddings with the structure of a trained encoder's: a class direction, a clip direction
    (a clip's own patches are its nearest, so leaving the clip out matters) and patch noise; the votes
    are mostly clear but not all right. Returns (z, clip index, labels) per evaluation patch."""
    clip_index, _ = eval_patch_index(clips.lengths)
    g = torch.Generator().manual_seed(seed)
    n_classes = int(clips.labels.max()) + 1
    classes = torch.randn(n_classes, dim, generator=g)
    own = torch.randn(len(clips.lengths), dim, generator=g)
    labels = clips.labels[clip_index]
    z = classes[labels] + 0.9 * own[clip_index] + 1.1 * torch.randn(len(clip_index), dim, generator=g)
    return z, clip_index, labels


def slow_knn_predictions(z: np.ndarray, clip_index: np.ndarray, labels: np.ndarray, k: int,
                         margin: float = 2e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kNN protocol (the reference code's evaluation) written out in float64 NumPy, one patch at a time: per clip the true
    label, the prediction, and whether the prediction can depend on rounding (a patch of the clip
    whose k-th and (k+1)-th most similar patches differ by less than ``margin``)."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n_classes = int(labels.max()) + 1
    patch_pred = np.empty(len(z), dtype=np.int64)
    near_tie = np.zeros(len(z), dtype=bool)
    for lo in range(0, len(z), 256):  # similarities a block of rows at a time; votes one patch at a time
        block = z[lo:lo + 256] @ z.T
        for i, sims in enumerate(block, start=lo):
            sims[clip_index == clip_index[i]] = -np.inf  # leave the patch's own clip out
            n = min(k + 1, len(sims))
            order = np.argpartition(-sims, n - 1)[:n]
            order = order[np.argsort(-sims[order], kind="stable")]
            top = order[:k]
            votes = np.bincount(labels[top], minlength=n_classes)
            patch_pred[i] = int(np.argmax(votes))  # the first maximum: ties to the smallest class id
            near_tie[i] = len(order) > k and sims[order[k - 1]] - sims[order[k]] < margin
    clips = np.unique(clip_index)
    truth, pred, ambiguous = (np.empty(len(clips), dtype=np.int64), np.empty(len(clips), dtype=np.int64),
                              np.empty(len(clips), dtype=bool))
    for row, c in enumerate(clips):
        mine = clip_index == c
        truth[row] = labels[mine][0]
        pred[row] = int(np.argmax(np.bincount(patch_pred[mine], minlength=n_classes)))
        ambiguous[row] = near_tie[mine].any()
    return truth, pred, ambiguous


def balanced(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


def check_knn(device: torch.device, sz: Sizes) -> dict[str, Any]:
    """The kNN vote on the device against the float64 reference (every clip whose prediction cannot turn
    on rounding must agree) and against the CPU's; its time; the evaluation forward."""
    clips = fsd_like_clips(sz.knn_clips, seed=2)
    z, clip_index, labels = knn_bank(clips, sz.knn_dim, seed=4)
    k = 200
    zd, cd, ld = z.to(device), clip_index.to(device), labels.to(device)
    truth, on_dev, _ = (t.cpu().numpy() for t in knn_predict(zd, cd, ld, k=k))
    on_cpu = knn_predict(z, clip_index, labels, k=k)[1].numpy()
    ref_truth, ref_pred, ambiguous = slow_knn_predictions(z.double().numpy(), clip_index.numpy(), labels.numpy(), k)
    compared = ~ambiguous
    differ = int((on_dev[compared] != ref_pred[compared]).sum())
    seconds = timed(lambda: knn_scores(zd, cd, ld, k=k), repeat=1 if sz.quick else 5, sync=device)
    cfg = config_from_dict({"model": {"width": sz.width}})
    model = build_model(cfg).to(device)
    dev_clips = clips.to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    forward = timed(lambda: embed_patches(model, dev_clips, -2.0, 1.0, amp_dtype=dtype), repeat=1, sync=device)
    return {
        "ok": (bool((truth == ref_truth).all()) and differ == 0 and compared.mean() >= 0.5
               and bool((on_dev == on_cpu).all())),
        "clips": sz.knn_clips, "patches": len(clip_index), "k": k,
        "balanced_acc_device": balanced(truth, on_dev), "balanced_acc_reference": balanced(ref_truth, ref_pred),
        "clips_compared_with_reference": int(compared.sum()), "clips_differing_from_reference": differ,
        "clips_differing_device_vs_cpu": int((on_dev != on_cpu).sum()), "knn_seconds": seconds,
        "embed_all_patches_seconds (resnet18, bf16 on CUDA)": forward,
    }


def check_throughput(device: torch.device, sz: Sizes) -> dict[str, Any]:
    """clips/s of the full pre-training step per encoder and precision (interleaved steps, one run),
    the ratio to fp32 and the views' share (``runs_as`` of the sharing check says what the shipped
    config resolves to)."""
    rows = []
    for encoder in sz.encoders:
        try:
            res = training_step.measure(encoder, device, list(MODES), sz.steps, sz.batch, sz.width, clips=sz.clips())
        except Exception as err:  # noqa: BLE001  one failing encoder must not hide the others
            rows.append({"encoder": encoder, "error": f"{type(err).__name__}: {err}"})
            continue
        for mode, r in res.items():
            rows.append({"encoder": encoder, "config": mode, "runs_as": r["runs_as"], "clips_per_s": r["clips_per_s"],
                         "ms_per_step": r["seconds"] * 1e3, "vs_fp32": r["clips_per_s"] / res["fp32"]["clips_per_s"],
                         "views_share": r["views"] / r["seconds"]})
    asked = {(e, m) for e in sz.encoders for m in MODES}
    measured = {(r["encoder"], r["config"]) for r in rows if "error" not in r}
    wrong = [r for r in rows if "error" not in r and not (
        math.isfinite(r["clips_per_s"]) and r["clips_per_s"] > 0 and r["runs_as"] == r["config"]
        and 0 < r["views_share"] <= 1)]
    return {"ok": measured == asked and not wrong and all("error" not in r for r in rows),
            "rows_not_measured": sorted(f"{e} {m}" for e, m in asked - measured),
            "rows_implausible (rate <= 0, not run as asked, views share outside (0, 1])":
                [f"{r['encoder']} {r['config']}" for r in wrong],
            "batch": sz.batch, "width": sz.width, "timed_steps": sz.steps, "rows": rows}


def _store(path: str | None) -> tuple[FeatureStore, str]:
    """The feature store that travelled with the command, or random frames (said so in the report)."""
    if path:
        return FeatureStore.load(path, mmap=False), f"feature store {path}"
    splits = {}
    for name, n, seed in (("pretrain", 200, 5), ("val", 60, 6)):
        c = fsd_like_clips(n, seed=seed)
        splits[name] = SplitStore(name, c.frames.numpy(), c.offsets.numpy(), c.lengths.numpy(),
                                  c.labels.numpy(), c.clip_ids)
    return FeatureStore(Path("."), [str(i) for i in range(20)], -2.0, 1.0, {}, splits, 0), "random frames"


def _pretrain_config(device: torch.device, sz: Sizes, epochs: int, precision: str = "auto") -> Any:
    return config_from_dict({
        "seed": 0,
        "model": {"encoder": "resnet18", "width": sz.width},
        "train": {"epochs": epochs, "batch_size": sz.pretrain_batch, "device": str(device),
                  "precision": precision, "lr_milestones": [0.99], "max_batches_per_epoch": sz.pretrain_batches},
        "eval": {"knn_k": 20},
    })


def check_pretrain(device: torch.device, sz: Sizes, store_path: str | None) -> dict[str, Any]:
    """3 epochs of real pre-training: the loss falls; fp16 with the GradScaler stays finite."""
    store, source = _store(store_path)
    result = pretrain(_pretrain_config(device, sz, 3), store)
    losses = [m["loss"] for m in result.history]
    out = {"store": source, "clips": len(store.splits["pretrain"].lengths), "batch": sz.pretrain_batch,
           "loss_per_epoch": losses, "knn_per_epoch": [m.get("knn_acc") for m in result.history],
           "clips_per_s": [m["clips_per_s"] for m in result.history]}
    fp16_ok = True
    if device.type == "cuda":  # the GradScaler is a CUDA path: fp16 autocast is not offered on CPUs
        fp16 = pretrain(_pretrain_config(device, sz, 2, "fp16"), store)
        out["fp16_gradscaler_loss_per_epoch"] = [m["loss"] for m in fp16.history]
        out["fp16_final_scale"] = float(fp16.state["scaler"]["scale"])
        fp16_ok = all(map(math.isfinite, out["fp16_gradscaler_loss_per_epoch"]))
    return {"ok": losses[-1] < losses[0] and fp16_ok, **out}


def _resumed_difference(device: torch.device, sz: Sizes, store: FeatureStore) -> dict[str, Any]:
    """Largest parameter and loss difference between 3 straight epochs and 2 + a resumed third."""
    cfg = _pretrain_config(device, sz, 3)
    with tempfile.TemporaryDirectory() as d:
        def keep_epoch_2(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            if metrics["epoch"] == 2:
                save_checkpoint(state, d)

        straight = pretrain(cfg, store, report=keep_epoch_2)
        resumed = pretrain(cfg, store, resume=load_checkpoint(d))
    a, b = straight.state["model"], resumed.state["model"]
    diff = max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)
    return {"bitwise": all(torch.equal(a[k], b[k]) for k in a), "max_abs_param_diff": diff,
            "loss_epoch3": [straight.history[-1]["loss"], resumed.history[-1]["loss"]]}


def check_resume(device: torch.device, sz: Sizes, store_path: str | None) -> dict[str, Any]:
    """Resume equality on the device, in the default and in PyTorch's deterministic mode."""
    store, source = _store(store_path)
    default = _resumed_difference(device, sz, store)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        deterministic = _resumed_difference(device, sz, store)
    finally:
        torch.use_deterministic_algorithms(False)
    tol = 1e-3  # after one epoch of SGD from the same state, non-deterministic kernels stay well below
    return {"ok": deterministic["bitwise"] or deterministic["max_abs_param_diff"] < tol, "store": source,
            "tolerance_if_not_bitwise": tol, "default_mode": default, "deterministic_mode": deterministic}


def _sharing_worker(encoder: str, device: str, quick: bool, barrier: Any, out: Any) -> None:
    """One trainer process: wait for all, then time the bf16 + channels_last pre-training step (what the
    shipped config runs as on a GPU with bf16 and on a CPU with native bf16; its median clips/s
    while the others run too). Always answers, with the error if it failed."""
    try:
        sz = Sizes(quick)
        torch.set_num_threads(1)
        barrier.wait(timeout=300)
        began = time.time()
        res = training_step.measure(encoder, torch.device(device), ["bf16+cl"], sz.sharing_steps, sz.batch, sz.width,
                                 clips=sz.clips())
        out.put((res["bf16+cl"]["clips_per_s"], began, time.time()))
    except BaseException as err:  # noqa: BLE001  the parent must not wait for an answer that never comes
        out.put(f"{type(err).__name__}: {err}")


def _shared_rate(encoder: str, device: torch.device, sz: Sizes, procs: int) -> list[tuple[float, float, float]]:
    """Per process: (clips/s, wall time its measurement began, ended)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_sharing_worker, args=(encoder, str(device), sz.quick, barrier, out))
               for _ in range(procs)]
    for w in workers:
        w.start()
    answers: list[tuple[float, float, float] | str] = []
    while len(answers) < procs:
        try:
            answers.append(out.get(timeout=5))
        except queue.Empty:
            if not any(w.is_alive() for w in workers) and out.empty():
                raise RuntimeError(f"{procs - len(answers)} trainer process(es) died without an answer") from None
    for w in workers:
        w.join()
    errors = [a for a in answers if isinstance(a, str)]
    if errors:
        raise RuntimeError(f"trainer process failed: {errors[0]}")
    return answers


def check_sharing(device: torch.device, sz: Sizes) -> dict[str, Any]:
    """Total clips/s of N trainer processes on one device against one alone (bf16 + channels_last). It
    passes when every process measured a positive rate and all N measured at the same time (their
    windows overlap): only then is the ratio one of processes sharing the device."""
    rows, ok = [], True
    for encoder in sz.sharing_encoders:
        (alone, _, _), = _shared_rate(encoder, device, sz, 1)
        shared = _shared_rate(encoder, device, sz, sz.sharing_procs)
        rates = [r for r, _, _ in shared]
        overlap = min(end for _, _, end in shared) - max(began for _, began, _ in shared)
        good = (len(shared) == sz.sharing_procs and overlap > 0
                and all(math.isfinite(r) and r > 0 for r in [alone, *rates]))
        ok = ok and good
        rows.append({"encoder": encoder, "alone_clips_per_s": alone, "per_process_clips_per_s": rates,
                     "total_ratio": sum(rates) / alone, "all_measured_at_once_s": overlap, "ok": good})
    return {"ok": ok, "processes": sz.sharing_procs, "batch": sz.batch, "width": sz.width, "rows": rows}


# ----------------------------------------------------------------------------- report

CHECKS: dict[str, str] = {
    "views": "batched views vs the per-sample reference, each op device vs CPU",
    "knn": "kNN on an FSDnoisy18k-sized bank: device vs reference and CPU vote, time, evaluation forward",
    "throughput": "pre-training step per encoder: fp32, bf16, bf16 + channels_last, views' share",
    "pretrain": "3 epochs of real pre-training (loss falls); fp16 + GradScaler stays finite",
    "resume": "resume equality: 3 epochs vs 2 + checkpoint + resumed third",
    "sharing": "trainer processes sharing one device vs one alone (fractional GPUs)",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] + [
        "| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]


def render(results: dict[str, Any], env: dict[str, Any]) -> str:
    lines = ["# Device check", "", " · ".join(f"{k}: {v}" for k, v in env.items()), ""]
    if env["device"] == "cpu":
        lines += ["CPU run: the checks a GPU run makes, at the sizes chosen; these are not GPU numbers.", ""]
    for name, what in CHECKS.items():
        r = results.get(name, {"skipped": True})
        status = "skipped" if r.get("skipped") else "error" if "error" in r else "pass" if r.get("ok") else "FAIL"
        lines += [f"## {name}: {status}", "", what, ""]
        for key, value in r.items():
            if key in ("ok", "rows", "traceback"):
                continue
            lines.append(f"- {key}: {_fmt(value)}")
        if r.get("rows"):
            lines += [""] + _table(r["rows"])
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI on a CPU: under a minute)")
    ap.add_argument("--store", help="feature-store folder for the pre-training and resume checks "
                                    "(default: random frames)")
    ap.add_argument("--out", default="device_check", help="folder for device_check.md and .json")
    ap.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {a.device}: CUDA is not available here (use --device cpu)", file=sys.stderr)
        return 2
    if a.store and not (Path(a.store) / "store.json").is_file():
        print(f"error: --store {a.store}: no store.json there (a folder written by "
              "`python -m uclser_tune.data features`)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sz = Sizes(a.quick)
    env = {"device": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda" else
           platform.processor() or platform.machine(), "torch": torch.__version__,
           "python": platform.python_version(), "quick": a.quick}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "views": lambda: check_views(device, sz),
        "knn": lambda: check_knn(device, sz),
        "throughput": lambda: check_throughput(device, sz),
        "pretrain": lambda: check_pretrain(device, sz, a.store),
        "resume": lambda: check_resume(device, sz, a.store),
        "sharing": lambda: check_sharing(device, sz),
    }
    results: dict[str, Any] = {}
    for name in a.only or CHECKS:
        started = time.perf_counter()
        print(f"[device_check] {name} …", flush=True)
        try:
            results[name] = runs[name]()
        except Exception as err:  # noqa: BLE001  report it and go on: device time is scarce
            results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - started
        print(f"[device_check] {name}: {_fmt(results[name])}", flush=True)
        (out / "device_check.json").write_text(json.dumps({"env": env, "results": results}, indent=1, default=str))
        (out / "device_check.md").write_text(render(results, env))
    failed = [n for n, r in results.items() if not r.get("ok")]
    print(f"[device_check] report: {out / 'device_check.md'}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
