"""``python -m analysis EXPERIMENT_DIR``: sensitivity analysis of a finished (or running) search.

Reads only the experiment dir written by ``python -m uclser_tune.search`` (search.json, the Optuna
study, trials.parquet or the trial dirs) and writes to --out:

  effects_adjusted.csv / .png  per scope (ASHA rung = epoch): each factor level against its reference
                            (ops on/off as op:<name>, mix-back, α, energy adjustment, magnitudes, searched
                            keys), adjusted for the other sampled factors by OLS; for a one-factor-at-a-
                            time grid (paper_ablations) each variant against the default by Welch's t.
                            95 % CI, Holm-corrected p, n per side, "n too small to read" where it is
  importance.csv / .png     fANOVA and PED-ANOVA on completed trials and at each rung (the first holds
                            every trial); n/a where an evaluator did not assess a parameter; order as
                            op positions; PED-ANOVA only with >= 5 trials in its top 10 %
  importance_stability.csv  fANOVA ranking over bootstrap resamples of the first rung
  parallel.png, best_so_far.png (against trial and trial-epochs)
  rung_survival.csv / .png  ASHA: share of trials reaching each rung, expected against actual
  effects.csv               raw kNN mean, sd, n per level and rung (for reading n; not effects)
  positions.png, config_effects.png  the same as plots
  tau_batch.csv / .png      mean kNN per (tau bin, batch size) cell, when both vary
  knn_curves.png            kNN per epoch of every trial, coloured by the last rung it reached
  variant_curves.png        kNN per epoch of each variant, seed mean ± sd (grids)
  paper_table{1,2}.csv/.md  the paper's Tables 1 and 2 (paper_ablations experiments) with the paper's
                            column (best val kNN), ours at the last epoch and best over epochs
  report.md                 all of the above with a line of reading each

Metrics: knn_e<r> (kNN at epoch r of every trial that reached it); trials are only compared at one
epoch. A running experiment is analysed as far as it got.
Exit status 2 when the dir is missing, not an experiment, or has no kNN result yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.load import AnalysisError
from analysis.run import analyse
from uclser_tune.search.results import ExperimentError, read_meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="a search's experiment dir (runs/<name>)")
    p.add_argument("--out", help="output folder (default: EXPERIMENT_DIR/analysis)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if Path(args.experiment_dir).is_dir():
            read_meta(Path(args.experiment_dir))  # a damaged search.json is named before any work
        path = analyse(args.experiment_dir, args.out, progress=lambda line: print(line, file=sys.stderr))
    except (AnalysisError, ExperimentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
