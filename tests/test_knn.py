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
    knn_predict,
    knn_scores,
)


def majority(counts):
    """Smallest class id among the maxima."""
    best = max(counts.values())
    return min(c for c, v in counts.items() if v == best)


def tied(counts):
    """Whether more than one class has the most votes."""
    best = max(counts.values())
    return sum(v == best for v in counts.values()) > 1


def slow_knn(z, clip_ids, labels, k, groups=None, ties=None):
    """(balanced, micro, top-3) accuracy, one patch and one clip at a time. Top-3: the clip's neighbour
    votes summed over its patches, classes ranked by votes, ties to the smaller id. ``groups``: a
    patch's neighbours are only patches of other groups (else of other clips). ``ties``: a dict that
    receives how many patch votes, clip votes and top-3 cuts the tie rule decided."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    left_out = clip_ids if groups is None else groups
    patch_pred, patch_votes = [], []
    for i in range(len(z)):
        bank = [(float(z[i] @ z[j]), j) for j in range(len(z)) if left_out[j] != left_out[i]]
        bank.sort(key=lambda t: -t[0])
        counts = {}
        for _, j in bank[:k]:
            counts[int(labels[j])] = counts.get(int(labels[j]), 0) + 1
        patch_pred.append(majority(counts))
        patch_votes.append(counts)
    clips = sorted(set(clip_ids.tolist()))
    truth, pred, in_top3 = [], [], []
    for c in clips:
        rows = [i for i in range(len(z)) if clip_ids[i] == c]
        counts, summed = {}, {}
        for i in rows:
            counts[patch_pred[i]] = counts.get(patch_pred[i], 0) + 1
            for cls, v in patch_votes[i].items():
                summed[cls] = summed.get(cls, 0) + v
        truth.append(int(labels[rows[0]]))
        pred.append(majority(counts))
        ranked = sorted(range(int(labels.max()) + 1), key=lambda cls: (-summed.get(cls, 0), cls))
        in_top3.append(truth[-1] in ranked[:3])
        if ties is not None:
            ties["clip"] = ties.get("clip", 0) + tied(counts)
            votes = [summed.get(cls, 0) for cls in ranked]  # the 3rd and 4th place tie: the cut is by id
            ties["top3"] = ties.get("top3", 0) + (len(votes) > 3 and votes[2] == votes[3])
    if ties is not None:
        ties["patch"] = sum(tied(c) for c in patch_votes)
    truth, pred = np.array(truth), np.array(pred)
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    return float(np.mean(recalls)), float(np.mean(truth == pred)), float(np.mean(in_top3))


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
    ref_bal, ref_micro, ref_top3 = slow_knn(z, clip_ids, labels, k)
    perm = np.random.default_rng(seed).permutation(len(z))  # a clip's patches scattered over the blocks
    for order in (np.arange(len(z)), perm):
        for chunk in (None, 1, 7):
            got = knn_scores(torch.from_numpy(z[order]), torch.from_numpy(clip_ids[order]),
                             torch.from_numpy(labels[order]), k, chunk=chunk)
            assert got["balanced_acc"] == pytest.approx(ref_bal)
            assert got["micro_acc"] == pytest.approx(ref_micro)
            assert got["top3_acc"] == pytest.approx(ref_top3)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 4, 1000])
def test_leave_one_group_out_equals_slow_reference(seed, k):
    z, clip_ids, labels = random_set(seed)
    rng = np.random.default_rng(seed + 10)
    clip_group = dict(zip(np.unique(clip_ids), rng.integers(0, 6, len(np.unique(clip_ids))) * 5 - 2))
    groups = np.array([clip_group[c] for c in clip_ids])  # several clips per group, ids not 0..n-1
    ref = slow_knn(z, clip_ids, labels, k, groups)
    perm = rng.permutation(len(z))
    for order in (np.arange(len(z)), perm):
        for chunk in (None, 1, 7):
            label, pred, _ = knn_predict(torch.from_numpy(z[order]), torch.from_numpy(clip_ids[order]),
                                              torch.from_numpy(labels[order]), k, chunk=chunk,
                                              groups=torch.from_numpy(groups[order]))
            assert balanced_accuracy(label, pred) == pytest.approx(ref[0])
            assert float((label == pred).double().mean()) == pytest.approx(ref[1])


def test_ties_go_to_the_smallest_class_id():
    # patch 0 has two equally similar neighbours of classes 2 and 1 → votes 1:1 → class 1 (its label)
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    clip_ids = torch.tensor([0, 1, 2, 3])
    labels = torch.tensor([1, 2, 1, 0])
    z_np, c_np, l_np = z.numpy(), clip_ids.numpy(), labels.numpy()
    for k in (2, 3):
        got = knn_scores(z, clip_ids, labels, k)
        assert [got[m] for m in ("balanced_acc", "micro_acc", "top3_acc")] == pytest.approx(
            slow_knn(z_np, c_np, l_np, k))
    # k=2, labels 1, 2, 1, 0: clip 0 → 1 (tie 2:1), clip 1 → 1 (two votes), clip 2 → 1 (tie 1:2), clip 3 → 1 (tie)
    assert knn_scores(z, clip_ids, labels, 2)["micro_acc"] == pytest.approx(2 / 4)
    # clip-level tie: a clip whose two patches predict classes 3 and 0 takes class 0
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.0, 1.01]])
    clip_ids, labels = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 3, 0])
    assert knn_scores(z, clip_ids, labels, 1)["micro_acc"] == pytest.approx(slow_knn(
        z.numpy(), clip_ids.numpy(), labels.numpy(), 1)[1])


@pytest.mark.parametrize("seed", range(3))
def test_top3_and_micro_with_tied_votes_over_the_whole_bank(seed):
    """Integer embeddings on few directions: many patches at the same similarity and many classes with
    the same vote count. With every patch in the bank (k = 1000) no similarity tie at the cut can
    matter, so the votes and the top-3 ranking are decided by the tie rules alone."""
    rng = np.random.default_rng(seed)
    n_clips, n_classes = 30, 6
    per_clip = rng.integers(1, 4, n_clips)
    clip_ids = np.repeat(np.arange(n_clips), per_clip)
    labels = np.repeat(rng.integers(0, n_classes, n_clips), per_clip)
    z = rng.integers(0, 2, size=(len(labels), 3)).astype(float) + np.eye(3)[rng.integers(0, 3, len(labels))]
    got = knn_scores(torch.from_numpy(z), torch.from_numpy(clip_ids), torch.from_numpy(labels), 1000)
    assert [got[m] for m in ("balanced_acc", "micro_acc", "top3_acc")] == pytest.approx(slow_knn(z, clip_ids, labels,
                                                                                                 1000))


def prototype_set(seed, n_clips=30, n_classes=5, per_class=10, dim=8):
    """Every patch is exactly one of a few prototype vectors, and each prototype belongs to one class: a
    patch ties in similarity with every other patch on its prototype (so the top-k cut falls inside
    such a tie all the time), but only ever with patches of one class, so which of them the cut keeps
    cannot change a vote. Prototypes are drawn until no two of them are equally similar to a third."""
    rng = np.random.default_rng(seed)
    while True:
        protos = rng.normal(size=(n_classes * per_class, dim))
        unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
        cos = unit @ unit.T
        if min(np.diff(np.sort(row)).min() for row in cos) > 1e-5:  # well above float32 rounding
            break
    proto_class = np.arange(len(protos)) % n_classes
    per_clip = rng.integers(1, 4, n_clips)
    clip_label = rng.integers(0, n_classes, n_clips)
    clip_ids = np.repeat(np.arange(n_clips) * 3 + 1, per_clip)
    labels = np.repeat(clip_label, per_clip)
    proto = np.array([rng.choice(np.flatnonzero(proto_class == c)) for c in labels])
    return protos[proto], clip_ids, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_ties_at_small_k_equal_the_slow_reference(seed, k):
    """At small k the tie rules decide: patch votes split evenly between classes (a patch's class and a
    neighbouring prototype's), clips whose patches disagree, top-3 cuts between classes of equal votes."""
    z, clip_ids, labels = prototype_set(seed)
    ties = {}
    ref = slow_knn(z, clip_ids, labels, k, ties=ties)
    # the data exercises the rules it is there for (one neighbour cannot tie; clips and top-3 cuts still can)
    assert (k == 1 or ties["patch"] >= 2) and ties["clip"] >= 3 and ties["top3"] >= 3, ties
    perm = np.random.default_rng(seed).permutation(len(z))
    for order in (np.arange(len(z)), perm):
        for chunk in (None, 1, 7):
            got = knn_scores(torch.from_numpy(z[order]), torch.from_numpy(clip_ids[order]),
                             torch.from_numpy(labels[order]), k, chunk=chunk)
            assert [got[m] for m in ("balanced_acc", "micro_acc", "top3_acc")] == pytest.approx(ref), (order, chunk)


def test_top3_by_hand():
    # five clips of one patch each; labels 0, 1, 2, 3, 3. k = 4 (the whole bank), so each clip's votes
    # are the other clips' labels: clip 0 sees 1, 2, 3, 3 → ranked 3, 1, 2 (0 is not among them).
    z = torch.eye(5)
    labels, clip_ids = torch.tensor([0, 1, 2, 3, 3]), torch.arange(5)
    # clip 1 sees 0, 2, 3, 3 → 3, 0, 2: miss; clip 2 sees 0, 1, 3, 3 → 3, 0, 1: miss; clips 3 and 4 see
    # 0, 1, 2, 3 → all tied, smallest ids 0, 1, 2: miss. No clip has its class in its top 3.
    assert knn_scores(z, clip_ids, labels, 4)["top3_acc"] == 0.0
    labels = torch.tensor([0, 0, 1, 2, 3])  # clip 0 sees 0, 1, 2, 3 → ties → 0, 1, 2: hit; clip 1 likewise
    # clip 2 sees 0, 0, 2, 3 → 0, 2, 3: miss (its class 1 has no vote); clip 3 sees 0, 0, 1, 3 → 0, 1, 3: miss;
    # clip 4 sees 0, 0, 1, 2 → 0, 1, 2: miss
    assert knn_scores(z, clip_ids, labels, 4)["top3_acc"] == pytest.approx(2 / 5)
    assert slow_knn(z.numpy(), clip_ids.numpy(), labels.numpy(), 4)[2] == pytest.approx(2 / 5)


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
