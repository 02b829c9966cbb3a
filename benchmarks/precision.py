"""Does mixed precision change what pre-training learns, or the kNN vote? Learning parity of the default
config (``train.precision: auto``, ``train.channels_last: auto``; bf16 + channels_last on a CPU with
native bf16) against ``fp32`` / ``off``, over seeds, and the kNN vote of each trained model with an
fp32 against a bf16 evaluation forward.

    nice -n 10 python -m benchmarks.precision --seeds 0 1 2 --epochs 6

Each seed trains both configs back to back (same data, views and initial weights: only the arithmetic
differs). Reported: final val kNN balanced accuracy per run and mean ± sd per config, minutes per
run; then per trained model the share of val clips whose kNN prediction is the same with the fp32 and
the bf16 forward, and both balanced accuracies.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from uclser_tune.config import config_from_dict
from uclser_tune.data.store import open_store
from uclser_tune.evaluation import embed_patches, knn_predict
from uclser_tune.evaluation.metrics import balanced_accuracy
from uclser_tune.training import build_model, pretrain
from uclser_tune.training.runtime import set_threads

CONFIGS = {"fp32": {"train.precision": "fp32", "train.channels_last": "off"}, "default": {}}


def knn_forward(model: torch.nn.Module, clips, store, k: int, dtype: torch.dtype | None):
    """(true label, prediction) per val clip with the evaluation forward in ``dtype`` (None = fp32)."""
    z, clip_index = embed_patches(model, clips, store.mean, store.std, amp_dtype=dtype)
    label, pred, _ = knn_predict(z, clip_index, clips.labels[clip_index], k)
    return label, pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", help="synthetic set size")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--proj", type=int, nargs=2, default=[128, 64], metavar=("HIDDEN", "DIM"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    a = ap.parse_args()
    base = config_from_dict({"data": {"synth_size": a.size}, "model": {"encoder": a.encoder, "width": a.width,
                                                                     "proj_hidden": a.proj[0], "proj_dim": a.proj[1]},
                             "train": {"epochs": a.epochs, "num_threads": a.threads}, "eval": {"knn_k": a.k, "every": a.epochs}})
    set_threads(a.threads)
    store = open_store(base.data)
    val = store.splits["val"].to_torch()
    print(f"{a.encoder} width {a.width}, proj {a.proj[0]}/{a.proj[1]}, {a.epochs} epochs, batch "
          f"{base.train.batch_size}, {a.size} synthetic set, val kNN k={a.k}; {torch.get_num_threads()} threads")
    print("| seed | config | ran as | val kNN bAcc | minutes | clips/s | eval fp32 vs bf16: same prediction "
          "| bAcc fp32 fwd | bAcc bf16 fwd |\n|---|---|---|---|---|---|---|---|---|")
    knn: dict[str, list[float]] = {name: [] for name in CONFIGS}
    agreement = []
    for seed in a.seeds:
        for name, overrides in CONFIGS.items():
            cfg = base.replace({"seed": seed, **overrides})
            started = time.perf_counter()
            result = pretrain(cfg, store)
            minutes = (time.perf_counter() - started) / 60
            last = result.history[-1]
            knn[name].append(last["knn_acc"])
            model = build_model(cfg)
            model.load_state_dict(result.state["model"])
            if result.state["channels_last"]:
                model = model.to(memory_format=torch.channels_last)
            label, pred32 = knn_forward(model, val, store, a.k, None)
            _, pred16 = knn_forward(model, val, store, a.k, torch.bfloat16)
            same = float((pred32 == pred16).double().mean())
            agreement.append(same)
            ran = last["precision"] + ("+cl" if last["channels_last"] else "")
            clips_per_s = statistics.mean(m["clips_per_s"] for m in result.history)
            print(f"| {seed} | {name} | {ran} | {last['knn_acc']:.4f} | {minutes:.1f} | {clips_per_s:.0f} | "
                  f"{same:.4f} | {balanced_accuracy(label, pred32):.4f} | {balanced_accuracy(label, pred16):.4f} |",
                  flush=True)
    for name, values in knn.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{name}: val kNN bAcc {statistics.mean(values):.4f} ± {sd:.4f} (mean ± sd over {len(values)} seeds)")
    print(f"eval forward fp32 vs bf16: {min(agreement):.4f}-{max(agreement):.4f} of val clips get the same kNN "
          f"prediction")


if __name__ == "__main__":
    main()
