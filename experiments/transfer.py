"""Transfer to real audio: is an encoder pre-trained on the synthetic set better on
real drum hits than the same encoder at random initialisation, and than plain log-mel statistics?

    python -m experiments.transfer --drums ~/.cache/uclser_tune/drum_hits --weights runs/paper_effects

The drum set (``../shared/data/build_drum_hits.sh DIR``: 293 one-shot hits, 8 classes, every row
verified) was never seen by pre-training. Each encoder is read with the project's kNN (patches of the
clip, cosine, clip majority vote, leave-one-clip-out within the split, k 5), on the drum set's
``test`` split and, as a second set of unseen clips, its ``val`` split; inputs are normalised with the
drum store's own mean and std. Encoders:

- ``pretrained``: the last weights of the ``default`` runs of ``experiments.paper_effects`` (one per
  seed; the seed also fixed their initialisation);
- ``random_init``: the same architecture initialised with the same seeds, never trained;
- ``logmel_mean_std``: no encoder. Each clip is the mean and the standard deviation of every mel band
  over its frames (192 numbers), each dimension standardised over the split, with the same kNN.

Per split, pretrained − random_init is paired by seed, pretrained − logmel_mean_std is one-sample
(the baseline has no seed). Two intervals, each Holm-corrected over the four rows (2 comparisons × 2
splits):

- a 95 % t-interval over seeds: the seeds' spread only, the clips taken as fixed;
- a 95 % bootstrap interval over seeds *and* clips (``uclser_tune.evaluation.stats.bootstrap_bacc_diff``,
  10 000 replicates, clips drawn within their class, paired): a split has about 18 clips per class, and
  a claim about drum hits in general must include their sampling.

A comparison holds only if the difference is positive and both Holm-corrected p are below 0.05.

``--leave-kit-out`` (``experiments/protocols/transfer_leave_kit_out.md``): a split's clips come from
a few Hydrogen kits, and one instrument's velocity layers (near-copies) stay together. Then a clip's kNN
neighbours exclude every clip of its own kit (``FSDnoisy18k.doc/sources.csv``: the first component of
``source_path``), for the encoders and the baseline alike, and the bootstrap draws each class's kits
(with all their clips of that class) instead of single clips.

Outputs in ``--out``: ``transfer.csv`` (every encoder, seed, split), ``clip_predictions.csv`` (every
clip's label and kNN prediction, from which every number can be recomputed), ``comparisons.csv`` and
``report.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.common import write_csv
from uclser_tune.config import config_from_dict
from uclser_tune.data.store import open_store
from uclser_tune.evaluation.knn import knn_predict
from uclser_tune.evaluation.metrics import balanced_accuracy
from uclser_tune.evaluation.patches import embed_patches
from uclser_tune.evaluation.stats import bootstrap_bacc_diff, holm, t_interval
from uclser_tune.training import build_model

SPLITS = ("test", "val")
SOURCES = "FSDnoisy18k.doc/sources.csv"  # build_drum_hits.sh: each clip's kit and file
K = 5
N_BOOT = 10000


def logmel_mean_std(clips: Any) -> torch.Tensor:
    """Per clip: every mel band's mean and standard deviation over its frames, standardised over clips."""
    packed = clips.subset(torch.arange(len(clips)))  # frames in clip order, no gaps
    clip_of = torch.repeat_interleave(torch.arange(len(clips)), packed.lengths)
    n = packed.lengths[:, None].double()
    frames = packed.frames.double()
    mean = torch.zeros(len(clips), frames.shape[1], dtype=torch.float64).index_add_(0, clip_of, frames) / n
    sq = torch.zeros_like(mean).index_add_(0, clip_of, frames**2) / n
    feats = torch.cat([mean, (sq - mean**2).clamp_min(0).sqrt()], 1).float()
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-8)


def baseline_predictions(clips: Any, k: int, kits: torch.Tensor | None = None) -> torch.Tensor:
    """Each clip's kNN prediction from its log-mel statistics (one vector per clip, so one 'patch');
    ``kits`` (clips,): leave each clip's kit out of its neighbours."""
    feats = logmel_mean_std(clips)
    return knn_predict(feats, torch.arange(len(feats)), clips.labels, k, groups=kits)[1]


def encoder_predictions(model: Any, clips: Any, mean: float, std: float, k: int, output: str = "z",
                        kits: torch.Tensor | None = None) -> torch.Tensor:
    """Each clip's kNN prediction from the model's patch embeddings (with ``output`` z, what ``evaluate_knn``
    scores; h is the encoder's output before the projection head); ``kits`` as in ``baseline_predictions``."""
    z, clip_index = embed_patches(model.eval(), clips, mean, std, output=output)
    return knn_predict(z, clip_index, clips.labels[clip_index], k, groups=None if kits is None else kits[clip_index])[1]


def clip_kits(drums: Path, clips: Any) -> torch.Tensor:
    """Each clip's kit, as an integer, from the drum set's ``sources.csv`` (KeyError: a clip not listed)."""
    with open(drums / SOURCES, newline="") as f:
        kit_of = {r["fname"]: r["source_path"].split("/")[0] for r in csv.DictReader(f)}
    code = {name: i for i, name in enumerate(sorted(set(kit_of.values())))}
    return torch.tensor([code[kit_of[c]] for c in clips.clip_ids])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.transfer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drums", type=Path, required=True, help="the drum set folder (FSDnoisy18k layout)")
    ap.add_argument("--weights", type=Path, default=Path("runs/paper_effects"),
                    help="experiments.paper_effects --work folder: default-seed<N>.json and .pt")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="the pre-training seeds to read (default: every default-seed<N> in --weights)")
    ap.add_argument("--embedding", choices=("z", "h"), default="z",
                    help="z: the projection head's output, as the project's kNN (the default); h: the "
                         "encoder's output before the head, what linear evaluation and fine-tuning read")
    ap.add_argument("--leave-kit-out", action="store_true",
                    help="kNN neighbours from other kits only, and a bootstrap that draws kits within each class "
                         "(needs the drum set's FSDnoisy18k.doc/sources.csv)")
    ap.add_argument("--out", type=Path, default=Path("results/transfer"))
    args = ap.parse_args(argv)
    runs = sorted(args.weights.glob("default-seed*.json"))
    if args.seeds is not None:
        runs = [p for p in runs if int(p.stem.removeprefix("default-seed")) in set(args.seeds)]
    if len(runs) < 2 or (args.seeds is not None and len(runs) != len(set(args.seeds))) \
            or not (args.drums / "FSDnoisy18k.meta" / "train.csv").exists():
        print(f"error: --weights {args.weights} lacks default-seed<N>.json for two or more of the --seeds, or "
              f"--drums {args.drums} is not a data set in the FSDnoisy18k layout", file=sys.stderr)
        return 2
    if args.leave_kit_out and not (args.drums / SOURCES).exists():
        print(f"error: --leave-kit-out needs {args.drums / SOURCES} (written by build_drum_hits.sh)", file=sys.stderr)
        return 2
    store = open_store(config_from_dict({"data": {"root": str(args.drums)}}).data)
    splits = {s: store.splits[s].to_torch() for s in SPLITS}
    kits = {s: clip_kits(args.drums, c) if args.leave_kit_out else None for s, c in splits.items()}
    rows: list[dict[str, Any]] = []
    preds: dict[tuple[str, Any, str], torch.Tensor] = {}
    for path in runs:
        record = json.loads(path.read_text())
        cfg = config_from_dict(record["config"])
        torch.manual_seed(cfg.seed)  # build_model's initialisation, as the pre-training's own start
        encoders = {"random_init": build_model(cfg)}
        encoders["pretrained"] = build_model(cfg)
        encoders["pretrained"].load_state_dict(torch.load(path.with_suffix(".pt"), weights_only=True))
        for name, model in encoders.items():
            for split, clips in splits.items():
                preds[name, cfg.seed, split] = encoder_predictions(model, clips, store.mean, store.std, K,
                                                                   args.embedding, kits[split])
                rows.append({"encoder": name, "seed": cfg.seed, "split": split, "embedding": args.embedding,
                             "knn_bacc": balanced_accuracy(clips.labels, preds[name, cfg.seed, split]),
                             "pretrained_on": f"synthetic {cfg.data.synth_size} v3, {cfg.train.epochs} epochs"})
    for split, clips in splits.items():
        preds["logmel_mean_std", "", split] = baseline_predictions(clips, K, kits[split])
        rows.append({"encoder": "logmel_mean_std", "seed": "", "split": split, "embedding": "",
                     "knn_bacc": balanced_accuracy(clips.labels, preds["logmel_mean_std", "", split]),
                     "pretrained_on": ""})
    labels = {split: clips.labels.numpy() for split, clips in splits.items()}
    correct = {key: (pred.numpy() == labels[key[2]]) for key, pred in preds.items()}
    comparisons = compare(rows, correct, labels, {s: None if k is None else k.numpy() for s, k in kits.items()})
    clip_rows = [{"encoder": e, "seed": seed, "split": split, "clip": i, "label": int(labels[split][i]),
                  "pred": int(p)} for (e, seed, split), pred in preds.items() for i, p in enumerate(pred.tolist())]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("transfer.csv", rows), ("clip_predictions.csv", clip_rows), ("comparisons.csv", comparisons)):
        write_csv(args.out / name, data)
    (args.out / "report.md").write_text(report(rows, comparisons, {s: len(c.lengths) for s, c in splits.items()},
                                               args.leave_kit_out))
    print((args.out / "report.md").read_text())
    return 0


def compare(rows: list[dict[str, Any]], correct: dict[tuple[str, Any, str], np.ndarray],
            labels: dict[str, np.ndarray], kits: dict[str, np.ndarray | None]) -> list[dict[str, Any]]:
    """Per split, pretrained against random_init (paired by seed) and against the log-mel baseline: the
    seed t-interval and the seed-and-clip bootstrap (kits drawn whole where ``kits`` has them), each
    Holm-corrected over all rows."""
    def acc(encoder: str, split: str) -> dict:
        return {r["seed"]: r["knn_bacc"] for r in rows if r["encoder"] == encoder and r["split"] == split}

    out = []
    for split in SPLITS:
        pre, rnd, base = acc("pretrained", split), acc("random_init", split), acc("logmel_mean_std", split)[""]
        seeds = sorted(pre)
        hits_pre = np.stack([correct["pretrained", s, split] for s in seeds])
        for other, diffs, hits_other in (
                ("random_init", [pre[s] - rnd[s] for s in seeds],
                 np.stack([correct["random_init", s, split] for s in seeds])),
                ("logmel_mean_std", [pre[s] - base for s in seeds], correct["logmel_mean_std", "", split][None])):
            diff, lo, hi, p = t_interval(diffs)
            _, boot_lo, boot_hi, p_boot = bootstrap_bacc_diff(hits_pre, hits_other, labels[split], N_BOOT,
                                                              groups=kits[split])
            out.append({"split": split, "a": "pretrained", "b": other, "n": len(diffs),
                        "n_clips": len(labels[split]), "mean_a": float(np.mean(list(pre.values()))),
                        "mean_b": base if other == "logmel_mean_std" else float(np.mean(list(rnd.values()))),
                        "diff": diff, "ci_low": lo, "ci_high": hi, "p": p,
                        "boot_ci_low": boot_lo, "boot_ci_high": boot_hi, "p_boot": p_boot})
    for key in ("p", "p_boot"):
        for row, p_holm in zip(out, holm(np.array([r[key] for r in out]))):
            row[f"{key}_holm"] = float(p_holm)
    for row in out:
        row["holds"] = bool(row["diff"] > 0 and row["p_holm"] < 0.05 and row["p_boot_holm"] < 0.05)
    return out


def report(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], sizes: dict[str, int],
           leave_kit_out: bool = False) -> str:
    protocol = ("leave-one-kit-out within the split (a clip's neighbours are clips of other kits)" if leave_kit_out
                else "leave-one-clip-out within the split")
    unit = ("kits within each class (each with all its clips of the class; one kit's correlation across "
            "classes is not modelled)" if leave_kit_out else "the clips within each class")
    lines = "\n".join(
        f"| {c['split']} ({sizes[c['split']]} clips) | pretrained {c['mean_a']:.3f} | {c['b']} {c['mean_b']:.3f} | "
        f"{c['diff']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {c['p_holm']:.2g} | "
        f"[{c['boot_ci_low']:+.3f}, {c['boot_ci_high']:+.3f}], {c['p_boot_holm']:.2g} | "
        f"{'yes' if c['holds'] else 'no'} |" for c in comparisons)
    return f"""# Transfer to real drum hits (`python -m experiments.transfer`)

Pre-trained on: {rows[0]['pretrained_on']} (the `default` runs of `experiments.paper_effects`), n =
{comparisons[0]['n']} seeds. kNN balanced accuracy on the encoders' {rows[0]['embedding']} embeddings, k {K},
{protocol}; chance 0.125.

| split | a | b | a − b | seeds only: 95 % CI, p Holm | seeds and clips: 95 % CI, p Holm | a better |
|---|---|---|---|---|---|---|
{lines}

"Seeds only" is a t-interval over the {comparisons[0]['n']} seeds, the clips taken as fixed. "Seeds and
clips" is a bootstrap ({N_BOOT} replicates) that also redraws {unit}, paired between
a and b: it is the interval for drum hits in general rather than these clips. Holm is over the four rows,
separately for each kind of p. "a better" needs a positive difference and both p_Holm < 0.05.
"""


if __name__ == "__main__":
    sys.exit(main())
