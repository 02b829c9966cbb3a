"""How far each reading of a search may be trusted: the share of planted-truth searches in which it
recovered the planted truth.

The rates are measured by ``python -m experiments.evaluator_recovery`` (``augs.yaml`` on 4 planted
truths x 5 TPE seeds, read at the first rung; one row per search in
``results/evaluator_recovery/recovery.csv``) and kept here as numbers, so that the installed analysis
needs no results folder. ``tests/test_trust.py`` checks them against that table.
"""

from __future__ import annotations

TRUSTED = 0.8  # share of planted-truth searches a reading must recover to be printed without a mark
HIDE = 0.25  # a reading that recovered at most this share of the planted truths is not shown at all
ADJUSTED = "adjusted effects"
SOURCE = "results/evaluator_recovery: augs.yaml, 4 truths x 5 TPE seeds, read at the first rung"
# reading -> (planted-truth searches recovered, planted-truth searches)
RATES: dict[str, tuple[int, int]] = {ADJUSTED: (18, 20), "fanova": (15, 20), "ped_anova": (0, 20)}
