"""Seaborn figures as PNG; each function draws one analysis and returns the file it wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analysis.load import rung_reached

DPI = 120
KNN = "val kNN balanced accuracy"


def metric_label(metric: str) -> str:
    return "last reported (any epoch)" if metric == "last_knn" else f"at epoch {metric.removeprefix('knn_e')}"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(metric=frame["metric"].map(metric_label))


def importance(rows: pd.DataFrame, path: Path) -> Path:
    order = rows.groupby("param")["importance"].mean().sort_values(ascending=False).index
    height = 0.3 * len(order) + 2
    grid = sns.catplot(rows, kind="bar", y="param", x="importance", hue="rung", col="evaluator", order=order,
                       height=height, aspect=6.5 / height, sharex=False)  # panels ≈ 6.5 in wide
    grid.set_axis_labels("importance (sums to 1)", "parameter")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Parameter importance per evaluator: completed trials and each ASHA rung", y=1.03)
    return _save(grid.figure, path)


def ops_onoff(onoff: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 0.5 * onoff["op"].nunique() * onoff["metric"].nunique() / 2 + 2))
    sns.barplot(_with_labels(onoff).dropna(subset=["diff"]), y="op", x="diff", hue="metric", ax=ax)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title="Effect of each op: mean kNN with the op minus without", xlabel=f"Δ {KNN}", ylabel="op")
    return _save(fig, path)


def by_level(obs: pd.DataFrame, path: Path, title: str, xlabel: str, strip: str = "") -> Path:
    """Mean ± sd of kNN per level, one panel per factor, hue = metric (levels in ``rank`` order)."""
    frame = _with_labels(obs.sort_values(["factor", "rank"], kind="stable"))
    frame = frame.assign(factor=frame["factor"].str.removeprefix(strip))
    grid = sns.catplot(frame, kind="point", x="level", y="value", hue="metric", col="factor",
                       col_wrap=min(3, frame["factor"].nunique()), errorbar="sd", dodge=0.3,
                       sharex=False, height=3.2, aspect=1.2)
    grid.set_axis_labels(xlabel, KNN)
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.03)
    return _save(grid.figure, path)


def tau_batch(cells: pd.DataFrame, path: Path) -> Path:
    metrics = list(dict.fromkeys(cells["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.5), squeeze=False,
                             layout="constrained")
    for i, (ax, metric) in enumerate(zip(axes[0], metrics)):
        part = cells[cells["metric"] == metric]
        means = part.pivot_table(index="tau_bin", columns="batch_size", values="mean", observed=True)
        counts = part.pivot_table(index="tau_bin", columns="batch_size", values="n", observed=True)
        text = means.map(lambda m: f"{m:.3f}" if pd.notna(m) else "") + counts.map(
            lambda n: f"\nn={n:.0f}" if pd.notna(n) else "")
        sns.heatmap(means, annot=text, fmt="", cmap="viridis", ax=ax, cbar_kws={"label": f"mean {KNN}"})
        ax.set(title=metric_label(metric), xlabel="batch size", ylabel="" if i else "τ (log-scale bins)")
    fig.suptitle("τ × batch size: mean kNN per cell")
    return _save(fig, path)


def curves(table: pd.DataFrame, rungs: list[int], path: Path) -> Path:
    """kNN per epoch of every trial, coloured by the last rung it reached; rungs as dashed lines."""
    table = table.assign(reached=rung_reached(table["epochs_run"], rungs))
    epochs = [int(c.removeprefix("knn_e")) for c in table if c.startswith("knn_e")]
    long = table.melt(id_vars=["optuna_number", "reached"], value_vars=[f"knn_e{e}" for e in epochs],
                      var_name="epoch", value_name="knn").dropna(subset=["knn"])
    long["epoch"] = long["epoch"].str.removeprefix("knn_e").astype(int)
    hue_order = [r for r in rung_reached(pd.Series([0, *rungs]), rungs) if r in set(long["reached"])]
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(long, x="epoch", y="knn", hue="reached", hue_order=hue_order, units="optuna_number",
                 estimator=None, marker="o", markersize=8, ax=ax, palette="viridis")
    for r in rungs:
        ax.axvline(r, color="grey", linestyle="--", linewidth=0.8)
    ax.legend(title="last rung reached")
    ax.set_xticks(sorted(long["epoch"].unique()))
    ax.set(title="kNN per epoch of every trial (dashed: rung epochs)", xlabel="epoch", ylabel=KNN)
    return _save(fig, path)
