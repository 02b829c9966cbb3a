"""kNN evaluation of an FSDnoisy18k-sized val set (1,772 clips, ~12k patches): the batched protocol
(blocked symmetric matmul + top-k + vectorised vote) vs the reference's per-clip loop (transcribed
in torch from ``eval_model_contrastive``), in one run on the same patch embeddings; plus the batched
embedding forward of all patches, which the reference runs twice, per clip.

    python -m benchmarks.knn
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import torch

from benchmarks.common import fsd_like_clips, timed
from uclser_tune.evaluation.knn import knn_scores
from uclser_tune.evaluation.metrics import balanced_accuracy
from uclser_tune.evaluation.patches import embed_patches, eval_patch_index
from uclser_tune.models import ContrastiveModel, ProjectionHead, build_encoder


def reference_loop(z: torch.Tensor, clip_of: torch.Tensor, labels: torch.Tensor, k: int) -> list[int]:
    """The kNN stage of the reference's ``eval_model_contrastive`` (edufonseca/uclser20), given the
    patch embeddings: per clip, its patches against the whole bank (one ``mm``), the clip's own
    columns dropped with ``index_select``, ``topk``, then a ``torch.unique`` vote per patch and per
    clip. (The reference also runs the encoder a second time per clip inside this loop; not timed.)"""
    bank, bank_labels = z.t(), labels
    preds, first = [], 0
    for n in torch.bincount(clip_of).tolist():
        out = z[first:first + n]
        dist = torch.mm(out, bank)
        keep = torch.ones(dist.size(1))
        keep[first:first + n] = 0
        dist = torch.index_select(dist, 1, torch.where(keep == 1)[0])
        _, yi = dist.topk(min(k, dist.size(1)), dim=1, largest=True, sorted=True)
        kept = bank_labels[keep == 1]
        retrieval = torch.gather(kept.view(1, -1).expand(n, -1), 1, yi)
        votes = torch.zeros(n, dtype=torch.long)
        for row in range(n):
            values, counts = torch.unique(retrieval[row], return_counts=True)
            votes[row] = values[counts.argmax()]
        values, counts = torch.unique(votes, return_counts=True)
        preds.append(int(values[counts.argmax()]))
        first += n
    return preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each (best is reported)")
    ap.add_argument("--encoder", default="resnet18")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = fsd_like_clips(1772, seed=1)
    clip_of, _ = eval_patch_index(clips.lengths)
    results: dict[str, object] = {}
    labels = clips.labels[clip_of]
    z = torch.nn.functional.normalize(torch.randn(len(clip_of), 512, generator=torch.Generator().manual_seed(0)), dim=1)
    times: dict[str, list[float]] = {"reference": [], "batched": []}
    for _ in range(a.repeats):  # alternated, so that both see the same machine load
        for name, fn in (("reference", lambda: reference_loop(z, clip_of, labels, 200)),
                         ("batched", lambda: knn_scores(z, clip_of, labels, 200))):
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            results[name] = out
    clip_labels = clips.labels
    same = balanced_accuracy(clip_labels, torch.tensor(results["reference"])) == results["batched"]["balanced_acc"]
    ref, batched = min(times["reference"]), min(times["batched"])
    ref_med, batched_med = (sorted(t)[len(t) // 2] for t in (times["reference"], times["batched"]))
    loop = ref
    print(f"val set: {len(clips)} clips, {len(clip_of)} patches, D=512, k=200, {torch.get_num_threads()} threads; "
          f"best and median of {a.repeats}; same balanced accuracy: {same}")
    print("| kNN evaluation | seconds, best | seconds, median | × faster (best / median) |\n|---|---|---|---|")
    print(f"| reference per-clip loop (torch transcription), cpu | {ref:.2f} | {ref_med:.2f} | 1× |")
    print(f"| batched (blocked symmetric matmul + top-k + vectorised vote), cpu | {batched:.2f} | {batched_med:.2f} | "
          f"{ref / batched:,.1f}× / {ref_med / batched_med:,.1f}× |")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev == "cuda":
            zc, cc, lc = z.cuda(), clip_of.cuda(), labels.cuda()
            s = timed(functools.partial(knn_scores, zc, cc, lc, 200), 5, sync=torch.device("cuda"))
            print(f"| batched, cuda | {s:.3f} | | {loop / s:,.0f}× (vs the CPU reference) |")
        enc = build_encoder(a.encoder)
        model = ContrastiveModel(enc, ProjectionHead(enc.embed_dim)).to(dev)
        c = clips.to(dev)
        sub = c if dev == "cuda" else c.subset(torch.arange(200))
        s = timed(functools.partial(embed_patches, model, sub, -2.0, 1.0, batch_size=512), 1, sync=torch.device(dev))
        n = len(eval_patch_index(sub.lengths)[0])
        print(f"| {a.encoder} forward of every val patch, {dev} ({n} patches timed, scaled to {len(clip_of)}) | "
              f"{s * len(clip_of) / n:.1f} | | |")


if __name__ == "__main__":
    main()
