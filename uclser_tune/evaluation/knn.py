"""The kNN protocol of the search objective (the reference code's kNN evaluation, edufonseca/uclser20), batched on the embeddings' device.

Each patch votes with its k most cosine-similar patches of *other* clips (leave-one-clip-out), plain
majority, ties to the smallest class id; a clip takes the majority of its patch votes (same tie
rule); the score is balanced accuracy over clips. Similarities are computed in blocks, each pair of
row blocks once, so memory stays bounded (a 16k-patch val set never needs a 16k × 16k matrix).
"""

from __future__ import annotations

import torch

from uclser_tune.evaluation.metrics import accuracy, balanced_accuracy

BLOCK = 2048  # rows per similarity block: (BLOCK, BLOCK) float32 = 16 MB


def _majority(votes: torch.Tensor) -> torch.Tensor:
    """argmax per row; torch returns the first maximum, i.e. the smallest class id on ties."""
    return votes.argmax(1)


def _neighbours(z: torch.Tensor, clip_of: torch.Tensor, k: int, block: int, group_of: torch.Tensor | None = None):
    """Yield ``(lo, hi, sims, index)``: for the patches lo..hi, their k most similar patches of other
    clips, or of other groups when ``group_of`` is given (similarity -inf where the bank has fewer than
    k). Each block of the symmetric similarity matrix is computed once and serves both its rows and,
    transposed, its columns, which halves the matmul work; per row block a running top-k is kept, so
    memory stays O(P·k + block²)."""
    n = len(z)
    left_out = clip_of if group_of is None else group_of
    bounds = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
    first = [left_out[lo:hi].min() for lo, hi in bounds]
    last = [left_out[lo:hi].max() for lo, hi in bounds]
    running: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(bounds)

    def merge(b: int, v: torch.Tensor, i: torch.Tensor) -> None:
        if running[b] is not None:
            v, i = torch.cat([running[b][0], v], 1), torch.cat([running[b][1], i], 1)
        top, pos = v.topk(min(k, v.shape[1]), dim=1, sorted=False)
        running[b] = (top, i.gather(1, pos))

    for bi, (lo, hi) in enumerate(bounds):
        for bj in range(bi, len(bounds)):
            clo, chi = bounds[bj]
            sims = z[lo:hi] @ z[clo:chi].T
            if first[bj] <= last[bi] and first[bi] <= last[bj]:  # the two blocks may share a clip (group)
                sims.masked_fill_(left_out[lo:hi, None] == left_out[None, clo:chi], float("-inf"))
            top, idx = sims.topk(min(k, chi - clo), dim=1, sorted=False)
            merge(bi, top, idx + clo)
            if bj != bi:
                top, idx = sims.T.contiguous().topk(min(k, hi - lo), dim=1, sorted=False)
                merge(bj, top, idx + lo)
        yield lo, hi, *running[bi]
        running[bi] = None


def knn_predict(z: torch.Tensor, clip_ids: torch.Tensor, labels: torch.Tensor, k: int = 200,
                chunk: int | None = None, groups: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per clip (in the order of its id): the true label, the kNN prediction, and the neighbour votes
    summed over the clip's patches (clips, classes). Arguments as :func:`knn_scores`; ``groups`` (P,),
    each patch's group (a clip lies in one group), leaves the query's whole group out of its neighbours
    instead of only its clip: leave one group out, for sets whose clips come in near-copies (one
    recording session, one drum kit)."""
    z = torch.nn.functional.normalize(z.float(), dim=1)
    clip_ids, labels = torch.as_tensor(clip_ids, device=z.device), torch.as_tensor(labels, device=z.device).long()
    clips, clip_of = torch.unique(clip_ids, return_inverse=True)
    group_of = None if groups is None else torch.unique(torch.as_tensor(groups, device=z.device),
                                                        return_inverse=True)[1]
    n_patches, n_classes = len(z), int(labels.max()) + 1
    k = min(k, n_patches)
    patch_votes = torch.zeros(n_patches, n_classes, device=z.device)
    for lo, hi, top, idx in _neighbours(z, clip_of, k, chunk or BLOCK, group_of):
        patch_votes[lo:hi].scatter_add_(1, labels[idx], torch.isfinite(top).float())
    patch_pred = _majority(patch_votes)
    clip_votes = torch.zeros(len(clips), n_classes, device=z.device)
    clip_votes.index_put_((clip_of, patch_pred), torch.ones(n_patches, device=z.device), accumulate=True)
    clip_label = torch.zeros(len(clips), dtype=torch.long, device=z.device).scatter_(0, clip_of, labels)
    summed = torch.zeros(len(clips), n_classes, device=z.device).index_add_(0, clip_of, patch_votes)
    return clip_label, _majority(clip_votes), summed


def knn_scores(z: torch.Tensor, clip_ids: torch.Tensor, labels: torch.Tensor, k: int = 200,
               chunk: int | None = None) -> dict[str, float]:
    """Balanced accuracy, micro accuracy and top-3 accuracy of the clip-level kNN prediction.

    ``z`` (P, D) patch embeddings, ``clip_ids`` (P,) each patch's clip, ``labels`` (P,) each patch's
    clip label. ``k`` larger than the bank uses every other-clip patch. top-3: the true class is
    among the 3 classes with most neighbour votes summed over the clip's patches.
    """
    clip_label, clip_pred, summed = knn_predict(z, clip_ids, labels, k, chunk)
    n_classes = summed.shape[1]
    rank_key = summed * n_classes - torch.arange(n_classes, device=summed.device)  # ties: smaller id first
    top3 = rank_key.topk(min(3, n_classes), dim=1).indices
    return {
        "balanced_acc": balanced_accuracy(clip_label, clip_pred),
        "micro_acc": accuracy(clip_label, clip_pred),
        "top3_acc": float((top3 == clip_label[:, None]).any(1).double().mean()),
    }


def knn_balanced_accuracy(z: torch.Tensor, clip_ids: torch.Tensor, labels: torch.Tensor, k: int = 200) -> float:
    """Clip-level balanced accuracy of the leave-one-clip-out kNN vote (the search objective)."""
    return knn_scores(z, clip_ids, labels, k)["balanced_acc"]
