"""The paper's three claims over several draws of the synthetic data: is an effect a
property of the generator, or of one draw of its clips?

    python -m experiments.paper_effects_draws results/paper_effects \
        results/paper_effects/data_seed1 results/paper_effects/data_seed2 \
        results/paper_effects/data_seed3 --out results/paper_effects/over_draws

Each input is the ``--out`` of one ``experiments.paper_effects`` run on its own data seed
(``--synth-seed``), with the same training seeds. Within a draw, ``paper_effects`` holds its val clips
fixed and varies the training seed. Here each draw's claim difference (the mean over its training
seeds of the paired differences) is one value, and the draws are the sample. Per claim: the mean over
draws, its two-sided 95 % t-interval (n − 1 df) and p, Holm over the three claims; ``holds`` is
diff > 0 and p_holm < 0.05. Writes ``paper_effects_draws.csv`` and ``report.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import CLAIMS, write_csv
from uclser_tune.evaluation.stats import holm, t_interval

COLUMNS = ["claim", "a", "b", "n_draws", "diff", "ci_low", "ci_high", "p_holm", "holds", "per_draw"]


def draw_rows(tables: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """One row per claim from the ``paper_effects.csv`` rows of each draw."""
    rows = []
    for claim, a, b in CLAIMS:
        diffs = [float(next(r for r in table if r["claim"] == claim)["diff"]) for table in tables]
        diff, lo, hi, p = t_interval(diffs)
        rows.append({"claim": claim, "a": a, "b": b, "n_draws": len(diffs), "diff": diff, "ci_low": lo,
                     "ci_high": hi, "p": p, "per_draw": " ".join(f"{d:+.4f}" for d in diffs)})
    for row, p_holm in zip(rows, holm(np.array([r.pop("p") for r in rows]))):
        row["p_holm"] = float(p_holm)
        row["holds"] = bool(row["diff"] > 0 and p_holm < 0.05)
    return rows


def report(rows: list[dict[str, Any]], dirs: list[Path], n_seeds: str) -> str:
    table = "\n".join(
        f"| `{r['claim']}` | {r['per_draw']} | {r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | "
        f"{r['p_holm']:.3g} | {'yes' if r['holds'] else 'no'} |" for r in rows)
    return f"""# The paper's three claims over {len(dirs)} draws of the synthetic data

Draws (one `experiments.paper_effects` output each, n = {n_seeds} training seeds per draw):
{chr(10).join(f"- `{d}`" for d in dirs)}

Each draw's difference is the mean over its training seeds of the paired differences in best val kNN
balanced accuracy. The interval is a two-sided 95 % t-interval over the {len(dirs)} draws, Holm over the
three claims; `holds` needs diff > 0 and p_Holm < 0.05.

| claim | per draw | mean over draws [95 % CI] | p (Holm over 3) | holds |
|---|---|---|---|---|
{table}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.paper_effects_draws", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+", help="experiments.paper_effects --out dirs, one per data seed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    tables = []
    for d in args.dirs:
        try:
            with open(d / "paper_effects.csv", newline="") as f:
                tables.append(list(csv.DictReader(f)))
        except OSError as err:
            print(f"error: {d}: no readable paper_effects.csv ({err.strerror})", file=sys.stderr)
            return 2
    seeds = {r["n"] for t in tables for r in t}
    if len(args.dirs) < 2 or len(seeds) != 1:
        print(f"error: need 2 or more draws with the same number of training seeds (got {len(args.dirs)} draws, "
              f"n = {sorted(seeds)})", file=sys.stderr)
        return 2
    rows = draw_rows(tables)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "paper_effects_draws.csv", rows, COLUMNS)
    (args.out / "report.md").write_text(report(rows, args.dirs, seeds.pop()))
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
