"""``python -m analysis EXPERIMENT_DIR``: sensitivity analysis of a finished (or running) search.

Reads only the experiment dir written by ``python -m uclser_tune.search`` (search.json, the Optuna
study, trials.parquet or the trial dirs) and writes to --out:

  importance.csv / .png     fANOVA and PED-ANOVA importance on completed trials and at each ASHA rung
  effects.csv               kNN mean, sd, n per level of every varied factor (ops on/off, op positions,
                            mix-back, alpha, energy adjustment, sampling, separation, encoder)
  ops_onoff.csv / .png      each op: kNN with it minus without, per metric
  positions.png, config_effects.png
  tau_batch.csv / .png      mean kNN per (tau bin, batch size) cell, when both vary
  knn_curves.png            kNN per epoch of every trial, coloured by the last rung it reached
  paper_table{1,2}.csv/.md  the paper's Tables 1 and 2 (paper_ablations experiments)
  report.md                 all of the above with a line of reading each

Metrics: last_knn (last reported kNN, whatever epoch the trial stopped at) and knn_e<r> (kNN at ASHA
rung r of every trial that reached it). A running experiment is analysed as far as it got.
Exit status 2 when the dir is missing, not an experiment, or has no kNN result yet.
"""

from __future__ import annotations

import argparse
import sys

from analysis.load import AnalysisError
from analysis.run import analyse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="a search's experiment dir (runs/<name>)")
    p.add_argument("--out", help="output folder (default: EXPERIMENT_DIR/analysis)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = analyse(args.experiment_dir, args.out, progress=lambda line: print(line, file=sys.stderr))
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
