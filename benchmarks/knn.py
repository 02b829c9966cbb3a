"""kNN evaluation of an FSDnoisy18k-sized val set (1,772 clips, ~16k patches): the batched protocol
(chunked matmul + top-k + vectorised vote) vs a per-clip loop in the style of the reference (NumPy, one
clip at a time, Python vote), in one run; plus the batched embedding forward of all patches.

    python benchmarks/knn.py [--loop-clips 100]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from benchmarks.common import fsd_like_clips, timed
from uclser_tune.evaluation.knn import knn_scores
from uclser_tune.evaluation.patches import embed_patches, eval_patch_index
from uclser_tune.models import ContrastiveModel, ProjectionHead, build_encoder


def per_clip_loop(z: np.ndarray, clip_of: np.ndarray, labels: np.ndarray, clips: np.ndarray, k: int) -> list[int]:
    """The reference's shape: for each clip, its patches against the bank, a Python vote per patch."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    preds = []
    for c in clips:
        rows = np.flatnonzero(clip_of == c)
        bank = np.flatnonzero(clip_of != c)
        votes = []
        for r in rows:
            sims = z[bank] @ z[r]
            top = bank[np.argsort(-sims)[:k]]
            counts = {}
            for j in top:
                counts[int(labels[j])] = counts.get(int(labels[j]), 0) + 1
            best = max(counts.values())
            votes.append(min(l for l, v in counts.items() if v == best))
        preds.append(max(set(votes), key=lambda v: (votes.count(v), -v)))
    return preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop-clips", type=int, default=100, help="clips timed in the per-clip loop (extrapolated)")
    ap.add_argument("--encoder", default="resnet18")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = fsd_like_clips(1772, seed=1)
    clip_of, _ = eval_patch_index(clips.lengths)
    labels = clips.labels[clip_of]
    z = torch.nn.functional.normalize(torch.randn(len(clip_of), 512, generator=torch.Generator().manual_seed(0)), dim=1)
    batched = timed(lambda: knn_scores(z, clip_of, labels, 200), 3)
    start = time.perf_counter()
    per_clip_loop(z.numpy(), clip_of.numpy(), labels.numpy(), np.arange(a.loop_clips), 200)
    loop = (time.perf_counter() - start) * len(clips) / a.loop_clips
    print(f"val set: {len(clips)} clips, {len(clip_of)} patches, D=512, k=200, {torch.get_num_threads()} threads")
    print("| kNN evaluation | seconds | × faster |\n|---|---|---|")
    print(f"| per-clip loop, reference style (timed on {a.loop_clips} clips, scaled to all) | {loop:.1f} | 1× |")
    print(f"| batched (chunked matmul + top-k + vectorised vote), cpu | {batched:.2f} | {loop / batched:,.0f}× |")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev == "cuda":
            zc, cc, lc = z.cuda(), clip_of.cuda(), labels.cuda()
            s = timed(lambda: knn_scores(zc, cc, lc, 200), 5, sync=torch.device("cuda"))
            print(f"| batched, cuda | {s:.3f} | {loop / s:,.0f}× |")
        enc = build_encoder(a.encoder)
        model = ContrastiveModel(enc, ProjectionHead(enc.embed_dim)).to(dev)
        c = clips.to(dev)
        sub = c if dev == "cuda" else c.subset(torch.arange(200))
        s = timed(lambda: embed_patches(model, sub, -2.0, 1.0, batch_size=512), 1, sync=torch.device(dev))
        n = len(eval_patch_index(sub.lengths)[0])
        print(f"| {a.encoder} forward of every val patch, {dev} ({n} patches timed) | "
              f"{s * len(clip_of) / n:.1f} (scaled to {len(clip_of)}) | |")


if __name__ == "__main__":
    main()
