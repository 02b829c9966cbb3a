"""How far each reading of a search may be trusted: the share of planted-truth searches in which it
recovered the planted truth, measured for the sampler and model the reading comes from.

The TPE rates are measured by ``python -m experiments.evaluator_recovery`` (``augs.yaml`` on 4 planted
truths x 5 TPE seeds, read at the first rung; one row per search in
``results/evaluator_recovery/recovery.csv``); the rate of a ``sampler: design`` search's adjusted
effects (the design's own model: on/off rows, order rows, the replicate a block) by ``python -m
experiments.design_recovery`` (``augs_design.yaml`` on ``truths/design_order.yaml``, 5 sampler seeds;
``results/design_order/recovery.csv``). They are kept here as numbers, so that the installed analysis
needs no results folder; ``tests/test_trust.py`` and ``tests/test_report_design_trust.py`` check them
against those tables.
"""

from __future__ import annotations

TRUSTED = 0.8  # share of planted-truth searches a reading must recover to be printed without a mark
HIDE = 0.25  # a reading that recovered at most this share of the planted truths is not shown at all
ADJUSTED = "adjusted effects"
SOURCE = "results/evaluator_recovery: augs.yaml, 4 truths x 5 TPE seeds, read at the first rung"
# reading -> (planted-truth searches recovered, planted-truth searches)
RATES: dict[str, tuple[int, int]] = {ADJUSTED: (18, 20), "fanova": (15, 20), "ped_anova": (0, 20)}
DESIGN_SOURCE = ("results/design_order: augs_design.yaml (sampler: design, 64 trials) on truths/design_order.yaml, "
                 "5 sampler seeds, read at the first rung")
DESIGN_RATES: dict[str, tuple[int, int]] = {ADJUSTED: (5, 5)}
