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
    """Bars per rung, one panel per evaluator; a parameter the evaluator did not assess reads "n/a"."""
    order = list(rows.groupby("param")["importance"].mean().sort_values(ascending=False, na_position="last").index)
    evaluators, rungs = list(dict.fromkeys(rows["evaluator"])), list(dict.fromkeys(rows["rung"]))
    fig, axes = plt.subplots(1, len(evaluators), figsize=(6.5 * len(evaluators), 0.25 * len(order) * len(rungs) / 2 + 2),
                             squeeze=False, sharey=True, layout="constrained")
    colours = sns.color_palette("viridis", len(rungs))
    height = 0.8 / len(rungs)
    for ax, evaluator in zip(axes[0], evaluators):
        part = rows[rows["evaluator"] == evaluator]
        for j, rung in enumerate(rungs):
            r = part[part["rung"] == rung].set_index("param").reindex(order)
            y = [i + (j - (len(rungs) - 1) / 2) * height for i in range(len(order))]
            n = r["n_trials"].dropna()
            label = f"{rung} (n={int(n.iloc[0])})" if len(n) else rung
            ax.barh(y, r["importance"].fillna(0), height=height, color=colours[j], label=label)
            for yi, value in zip(y, r["importance"]):
                if pd.isna(value):
                    ax.text(0.002, yi, "n/a", va="center", fontsize=6, color=colours[j])
        ax.set(title=evaluator, xlabel="importance (sums to 1 over the assessed parameters)")
        ax.set_yticks(range(len(order)), order)
        ax.legend(title="scope", fontsize=7)
    axes[0][0].invert_yaxis()  # the panels share it: most important on top
    fig.suptitle("Parameter importance per evaluator and scope (complete: last epoch of COMPLETE trials; e<r>: kNN "
                 "at rung r of every trial that reached it); n/a = not assessed, not zero")
    return _save(fig, path)


def adjusted_effects(rows: pd.DataFrame, path: Path) -> Path:
    """Forest plot of effects_adjusted.csv: estimate and 95 % CI per row, one panel per scope."""
    shown = rows.dropna(subset=["estimate", "ci_low"])
    scopes = list(dict.fromkeys(shown["scope"]))
    labels = list(dict.fromkeys(shown["factor"] + ": " + shown["level"] + " vs " + shown["reference"]))
    fig, axes = plt.subplots(1, len(scopes), figsize=(5.5 * len(scopes), 0.3 * len(labels) + 2), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, scope in zip(axes[0], scopes):
        part = shown[shown["scope"] == scope]
        y = [labels.index(f"{r.factor}: {r.level} vs {r.reference}") for r in part.itertuples()]
        significant = (part["p_holm"] < 0.05).to_numpy()
        ax.errorbar(part["estimate"], y, xerr=[part["estimate"] - part["ci_low"], part["ci_high"] - part["estimate"]],
                    fmt="none", ecolor="grey", capsize=2)
        ax.scatter(part["estimate"], y, c=["C3" if s else "C0" for s in significant], zorder=3, s=18)
        for yi, r in zip(y, part.itertuples()):
            ax.annotate(f"n={r.n_level}/{r.n_reference}", (1.0, yi), xycoords=("axes fraction", "data"), fontsize=6,
                        ha="left", va="center")
        ax.axvline(0, color="black", linewidth=0.8)
        aliased = part["method"].str.extract(r"ALIASED: (.*?) left out", expand=False).dropna()
        ax.set(title=scope + (f"\nnot to be read: {aliased.iloc[0]} aliased" if len(aliased) else ""),
               xlabel=f"Δ {KNN}")
        ax.set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()  # the panels share it: rows in the table's order, top down
    fig.suptitle("Adjusted effects: estimate (dot) and 95 % CI (bar) of each level against its reference, other "
                 "factors held fixed; red = Holm-corrected p < 0.05; n = trials at the level / the reference")
    return _save(fig, path)


def best_so_far(table: pd.DataFrame, path: Path) -> Path:
    """Best final kNN of the COMPLETE trials so far, against trial number and cumulative trial-epochs."""
    frame = table.sort_values("optuna_number").reset_index(drop=True)
    final = frame["last_knn"].where(frame["status"] == "COMPLETE")
    frame = frame.assign(final=final, best=final.cummax().ffill(), trial_epochs=frame["epochs_run"].cumsum())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    for ax, x, xlabel in [(axes[0], "optuna_number", "trial number"),
                          (axes[1], "trial_epochs", "cumulative trial-epochs (compute spent)")]:
        ax.step(frame[x], frame["best"], where="post", color="C3", label="best so far (COMPLETE, last epoch)")
        ax.scatter(frame[x], frame["final"], s=12, color="C0", label="a COMPLETE trial's last-epoch kNN")
        ax.set(xlabel=xlabel, ylabel=KNN)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Best so far over {len(frame)} trials ({int(final.notna().sum())} COMPLETE)")
    return _save(fig, path)


def parallel(study, params: list[str], path: Path, title: str) -> Path:
    """Optuna's parallel-coordinate plot of ``study`` over ``params``."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the API's stability notice, not about the data
        ax = plot_parallel_coordinate(study, params=params)
    ax.figure.set_size_inches(max(8, 1.4 * len(params)), 5)
    ax.set_title(title)
    return _save(ax.figure, path)


def rung_survival(survival: pd.DataFrame, path: Path) -> Path:
    """Share of trials reaching each rung: what ASHA's reduction factor predicts and what happened."""
    long = survival.melt(id_vars=["rung", "n_reached"], value_vars=["expected", "actual"], var_name="share",
                         value_name="fraction")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(long, x="rung", y="fraction", hue="share", ax=ax)
    for i, r in enumerate(survival.itertuples()):
        ax.annotate(f"n={r.n_reached}", (i + 0.2, r.actual), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="share of started trials reaching the rung", xlabel="ASHA rung (epoch)",
           title="ASHA rung survival: expected 1/reduction^k vs actual")
    return _save(fig, path)


def variant_curves(table: pd.DataFrame, path: Path) -> Path:
    """kNN against epoch per variant: mean over seeds with a ±1 sd band (n seeds in the legend)."""
    epochs = [c for c in table if c.startswith("knn_e")]
    long = table.melt(id_vars=["param_variant", "optuna_number"], value_vars=epochs, var_name="epoch",
                      value_name="knn").dropna(subset=["knn"])
    long["epoch"] = long["epoch"].str.removeprefix("knn_e").astype(int)
    counts = table.groupby("param_variant")["optuna_number"].count()
    long["variant"] = long["param_variant"].map(lambda v: f"{v} (n={counts[v]})")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sns.lineplot(long, x="epoch", y="knn", hue="variant", errorbar="sd", ax=ax, palette="tab20")
    ax.legend(fontsize=7, ncols=2)
    ax.set(title="kNN per epoch of each variant: mean over seeds, band ±1 sd", xlabel="epoch", ylabel=KNN)
    return _save(fig, path)


def by_level(obs: pd.DataFrame, path: Path, title: str, xlabel: str, strip: str = "") -> Path:
    """Raw mean ± sd of kNN per level, one panel per factor, hue = rung (levels in ``rank`` order)."""
    frame = _with_labels(obs.sort_values(["factor", "rank"], kind="stable"))
    frame = frame.assign(factor=frame["factor"].str.removeprefix(strip))
    grid = sns.catplot(frame, kind="point", x="level", y="value", hue="metric", col="factor",
                       col_wrap=min(3, frame["factor"].nunique()), errorbar="sd",
                       dodge=0.3 if frame["metric"].nunique() > 1 else False,
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
