"""Raw group means of kNN per level: each op on/off and its position, mix-back, sampling, encoder, tau x
batch, for reading n. They are not effects: factors sampled together are confounded (``analysis.stats``
adjusts for that). Every mean is over trials at one epoch, ``knn_e<r>`` (the kNN at ASHA rung r of
every trial that reached it); a trial's last kNN, whatever epoch it stopped at, is never pooled.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from analysis.load import Experiment

MAX_LEVELS = 3  # a continuous factor with more distinct values than this is binned


def metrics(exp: Experiment) -> list[str]:
    return [f"knn_e{r}" for r in exp.rungs if f"knn_e{r}" in exp.table]


def numeric_levels(values: pd.Series) -> pd.Series:
    """Numbers as labels ("0.05", "25") that sort by value, not as strings."""
    order = [f"{v:g}" for v in sorted(values.unique())]
    return pd.Series(pd.Categorical(values.map(lambda v: f"{v:g}"), categories=order, ordered=True),
                     index=values.index)


def binned(values: pd.Series, log: bool, n_bins: int = 3) -> pd.Series:
    """Labels of ``values``: the values themselves when few, else equal-width (log-width) bin ranges."""
    if values.nunique() <= MAX_LEVELS:
        return numeric_levels(values)
    lo, hi = values.min(), values.max()
    edges = np.geomspace(lo, hi, n_bins + 1) if log else np.linspace(lo, hi, n_bins + 1)
    labels = [f"{a:.3g}–{b:.3g}" for a, b in itertools.pairwise(edges)]
    return pd.cut(values, edges, labels=labels, include_lowest=True, ordered=True)


def factors(table: pd.DataFrame) -> dict[str, pd.Series]:
    """Factor name -> level of each trial it applies to (index aligned with ``table``); only factors
    with at least two levels among the trials."""
    out: dict[str, pd.Series] = {}
    for op in (c.removeprefix("pos_") for c in table.columns if c.startswith("pos_")):  # the table's ops
        pos = table[f"pos_{op}"]
        out[f"op:{op}"] = pos.gt(0).map({True: "on", False: "off"})
        out[f"position:{op}"] = numeric_levels(pos[pos > 0])
    mixed = table[table["mixback"].astype(bool)]
    out["mixback"] = table["mixback"].astype(bool).map({True: "on", False: "off"})
    out["mixback_alpha"] = binned(mixed["mixback_alpha"], log=True)
    out["mixback_energy_adjust"] = mixed["mixback_energy_adjust"].astype(bool).map(
        {True: "adjusted", False: "unadjusted"})
    out["sampling"] = table["sampling"].astype(str)
    out["separation"] = numeric_levels(table.loc[table["sampling"] == "separation", "separation"])
    out["encoder"] = table["encoder"].astype(str)
    return {name: levels.astype("category") for name, levels in out.items() if levels.nunique() > 1}


def observations(exp: Experiment) -> pd.DataFrame:
    """Long table: factor, level, rank, metric, value, one row per trial, factor and metric it has a
    value for, sorted by level rank (positions and distances by number, bins by range, names a-z)."""
    table, parts = exp.table, []
    for name, levels in factors(table).items():
        for metric in metrics(exp):
            frame = pd.DataFrame({"factor": name, "level": levels.astype(str), "rank": levels.cat.codes,
                                  "metric": metric, "value": table.loc[levels.index, metric]})
            parts.append(frame.dropna(subset=["value"]).sort_values("rank", kind="stable"))
    columns = ["factor", "level", "rank", "metric", "value"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def effects(obs: pd.DataFrame) -> pd.DataFrame:
    """factor, level, metric, mean, sd (ddof 1), n: the group means of ``observations``, in its order."""
    groups = obs.groupby(["factor", "level", "metric"], sort=False)["value"]
    stats = groups.agg(mean="mean", sd="std", n="count")
    return stats.reset_index()


def tau_batch(exp: Experiment) -> pd.DataFrame | None:
    """Mean kNN per (tau bin, batch size) cell and metric; None unless both tau and batch size vary."""
    table = exp.table
    if table["tau"].nunique() < 2 or table["batch_size"].nunique() < 2:
        return None
    frame = table.assign(tau_bin=binned(table["tau"], log=True, n_bins=4))
    cells = (frame.melt(id_vars=["tau_bin", "batch_size"], value_vars=metrics(exp), var_name="metric")
             .dropna(subset=["value"])
             .groupby(["metric", "tau_bin", "batch_size"], observed=True, sort=False)["value"]
             .agg(mean="mean", n="count").reset_index())
    return cells
