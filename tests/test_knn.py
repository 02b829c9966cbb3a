"""The batched kNN protocol against a slow per-patch reference, including ties and tiny classes."""

import numpy as np
import pytest
import torch

from uclser_tune.evaluation import (
    balanced_accuracy,
    embed_patches,
    eval_patch_index,
    evaluate_knn,
    knn_balanced_accuracy,
    knn_scores,
)


def majority(counts):
    """Smallest class id among the maxima."""
    best = max(counts.values())
    return min(c for c, v in counts.items() if v == best)


def slow_knn(z, clip_ids, labels, k):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    patch_pred = []
    for i in range(len(z)):
        bank = [(float(z[i] @ z[j]), j) for j in range(len(z)) if clip_ids[j] != clip_ids[i]]
        bank.sort(key=lambda t: -t[0])
        counts = {}
        for _, j in bank[:k]:
            counts[int(labels[j])] = counts.get(int(labels[j]), 0) + 1
        patch_pred.append(majority(counts))
    clips = sorted(set(clip_ids.tolist()))
    truth, pred = [], []
    for c in clips:
        rows = [i for i in range(len(z)) if clip_ids[i] == c]
        counts = {}
        for i in rows:
            counts[patch_pred[i]] = counts.get(patch_pred[i], 0) + 1
        truth.append(int(labels[rows[0]]))
        pred.append(majority(counts))
    truth, pred = np.array(truth), np.array(pred)
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    return float(np.mean(recalls)), float(np.mean(truth == pred))


def random_set(seed, n_clips=25, n_classes=5, dim=8):
    rng = np.random.default_rng(seed)
    per_clip = rng.integers(1, 6, n_clips)
    clip_label = rng.integers(0, n_classes, n_clips)
    clip_label[0] = n_classes  # a class with a single clip
    clip_ids = np.repeat(np.arange(n_clips) * 7 + 3, per_clip)  # ids need not be 0..n-1
    labels = np.repeat(clip_label, per_clip)
    centres = rng.normal(size=(n_classes + 1, dim))
    z = centres[labels] + rng.normal(scale=1.5, size=(len(labels), dim))
    return z, clip_ids, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 4, 10, 1000])
def test_equals_slow_reference(seed, k):
    z, clip_ids, labels = random_set(seed)
    ref_bal, ref_micro = slow_knn(z, clip_ids, labels, k)
    perm = np.random.default_rng(seed).permutation(len(z))  # a clip's patches scattered over the blocks
    for order in (np.arange(len(z)), perm):
        for chunk in (None, 1, 7):
            got = knn_scores(torch.from_numpy(z[order]), torch.from_numpy(clip_ids[order]),
                             torch.from_numpy(labels[order]), k, chunk=chunk)
            assert got["balanced_acc"] == pytest.approx(ref_bal)
            assert got["micro_acc"] == pytest.approx(ref_micro)


def test_ties_go_to_the_smallest_class_id():
    # patch 0 has two equally similar neighbours of classes 2 and 1 → votes 1:1 → class 1 (its label)
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    clip_ids = torch.tensor([0, 1, 2, 3])
    labels = torch.tensor([1, 2, 1, 0])
    z_np, c_np, l_np = z.numpy(), clip_ids.numpy(), labels.numpy()
    for k in (2, 3):
        got = knn_scores(z, clip_ids, labels, k)
        assert got["balanced_acc"] == pytest.approx(slow_knn(z_np, c_np, l_np, k)[0])
    # k=2, labels 1, 2, 1, 0: clip 0 → 1 (tie 2:1), clip 1 → 1 (two votes), clip 2 → 1 (tie 1:2), clip 3 → 1 (tie)
    assert knn_scores(z, clip_ids, labels, 2)["micro_acc"] == pytest.approx(2 / 4)
    # clip-level tie: a clip whose two patches predict classes 3 and 0 takes class 0
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.0, 1.01]])
    clip_ids, labels = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 3, 0])
    assert knn_scores(z, clip_ids, labels, 1)["micro_acc"] == pytest.approx(slow_knn(
        z.numpy(), clip_ids.numpy(), labels.numpy(), 1)[1])


def test_separated_clusters_score_one_and_top3():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(30)
    z = torch.eye(4)[labels] + 0.01 * torch.randn(120, 4, generator=g)
    clip_ids = torch.arange(120) // 3
    scores = knn_scores(z, clip_ids, labels, k=5)
    assert scores == {"balanced_acc": 1.0, "micro_acc": 1.0, "top3_acc": 1.0}
    assert knn_balanced_accuracy(z, clip_ids, labels, k=5) == 1.0


def test_balanced_accuracy_by_hand():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    p = torch.tensor([0, 1, 1, 1, 2, 0])
    assert balanced_accuracy(y, p) == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)


def test_patch_index_and_embedding(clips):
    idx, starts = eval_patch_index(clips.lengths, 101, 50)
    expected = ((clips.lengths - 101) // 50 + 1)
    assert len(idx) == int(expected.sum())
    for c in range(len(clips)):
        assert starts[idx == c].tolist() == [50 * i for i in range(int(expected[c]))]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(101 * 96, 5)).train()
    emb, clip_index = embed_patches(model, clips, mean=-2.0, std=2.0, batch_size=3)
    assert model.training  # mode restored
    p = 4
    c, s = int(clip_index[p]), int(starts[p])
    o = int(clips.offsets[c]) + s
    direct = model(((clips.frames[o : o + 101] + 2.0) / 2.0)[None, None])
    torch.testing.assert_close(emb[p], direct[0])
    scores = evaluate_knn(model, clips, -2.0, 2.0, k=3)
    assert set(scores) == {"balanced_acc", "micro_acc", "top3_acc"}
