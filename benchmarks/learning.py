"""Does pre-training learn on the synthetic set? Val kNN balanced accuracy of a randomly initialised
encoder vs the same encoder after a few epochs of SimCLR, with random vs same patch sampling.

    python -m benchmarks.learning --size small --encoder resnet18 --width 0.25 --epochs 10
"""

from __future__ import annotations

import argparse
import time

import torch

from uclser_tune.config import config_from_dict
from uclser_tune.data.store import open_store
from uclser_tune.evaluation.patches import evaluate_knn
from uclser_tune.training import build_model, pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=20, help="kNN k (the spec's 200 is for FSDnoisy18k's class sizes)")
    a = ap.parse_args()
    base = config_from_dict({"data": {"synth_size": a.size}, "model": {"encoder": a.encoder, "width": a.width},
                             "train": {"epochs": a.epochs}, "eval": {"knn_k": a.k, "every": a.epochs}})
    store = open_store(base.data)
    val = store.splits["val"].to_torch()
    torch.manual_seed(base.seed)
    random_init = evaluate_knn(build_model(base), val, store.mean, store.std, k=a.k)["balanced_acc"]
    print(f"{a.size} synthetic set, {a.encoder} width {a.width}, {a.epochs} epochs, k={a.k}")
    print("| encoder | val kNN balanced accuracy | minutes |\n|---|---|---|")
    print(f"| random init | {random_init:.3f} | |")
    for sampling in ("random", "same"):
        started = time.perf_counter()
        result = pretrain(base.replace({"views.sampling": sampling}), store)
        print(f"| pre-trained, sampling={sampling} | {result.last_knn:.3f} | {(time.perf_counter() - started) / 60:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
