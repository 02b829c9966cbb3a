"""``report.md``: a header on the experiment, then one section per analysis with its PNG, a line or
two of reading generated from the numbers, and links to the CSVs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.load import Experiment, rung_reached
from analysis.plots import metric_label
from uclser_tune.search import results


@dataclass
class Section:
    title: str
    lines: list[str]
    image: Path | None = None
    files: list[Path] = field(default_factory=list)
    body: str = ""


def signed(x: float) -> str:
    return f"{round(x, 3) + 0.0:+.3f}".replace("-", "−")  # + 0.0: no "−0.000"


def header(exp: Experiment) -> list[str]:
    counts = exp.table["status"].value_counts()
    space = exp.meta["space"] + ("" if exp.space else " (file not found)")
    asha = exp.asha
    rungs = ", ".join(f"e{r}" for r in exp.rungs) + (
        f" (grace {asha['grace_period']}, reduction {asha['reduction_factor']})" if asha else " (no ASHA)")
    lines = [f"# Sensitivity analysis: {exp.path.name}", "",
             f"- experiment: `{exp.path}` (study `{exp.meta['study_name']}` in `{exp.meta['storage']}`)",
             f"- space: `{space}`",
             (f"- trials: {len(exp.table)} ({', '.join(f'{k} {v}' for k, v in counts.items())}); table "
             f"{exp.table_source}"),
             f"- epoch budget {exp.max_epochs}; ASHA rungs {rungs}"]
    if exp.partial:
        lines.append(f"- **partial**: {counts['RUNNING']} trial(s) still RUNNING; "
                     "analysed as far as they got")
    best = results.best_trial(exp.table)
    found = "none complete yet" if best is None else (
        f"#{best['optuna_number']} ({best['trial_dir']}) kNN {best['last_knn']:.3f} "
        f"at epoch {best['epochs_run']}")
    lines.append("- best trial (scope: best val kNN balanced accuracy at the final rung, i.e. the last epoch "
                 f"of COMPLETE trials): {found}")
    lines += [f"- note: {n}" for n in exp.notes]
    return lines


def importance_lines(rows: pd.DataFrame, top: int = 3) -> list[str]:
    out = []
    for (evaluator, rung), part in rows.groupby(["evaluator", "rung"], sort=False):
        best = part.nlargest(top, "importance")
        scope = "completed trials" if rung == "complete" else f"trials that reached epoch {rung[1:]}"
        out.append(f"{evaluator}, {scope} (n={part['n_trials'].iloc[0]}): "
                   + ", ".join(f"{p} {v:.2f}" for p, v in zip(best["param"], best["importance"])))
    return out


def onoff_lines(onoff: pd.DataFrame) -> list[str]:
    """Per metric with any two-sided comparison: every op's difference, largest first."""
    out = []
    for metric, part in onoff.dropna(subset=["diff"]).groupby("metric", sort=False):
        part = part.reindex(part["diff"].abs().sort_values(ascending=False).index)
        out.append(f"{metric_label(metric)}: " + "; ".join(
            f"{r.op} on: {signed(r.diff)} kNN (n={r.n_on} vs {r.n_off})" for r in part.itertuples()))
    return out


def level_lines(effect_rows: pd.DataFrame, strip: str = "") -> list[str]:
    """Per factor, at the first rung (most trials compared at one epoch): each level's mean and n."""
    first = next((m for m in effect_rows["metric"] if m != "last_knn"), "last_knn")
    part = effect_rows[effect_rows["metric"] == first]
    return [f"{factor.removeprefix(strip)} ({metric_label(first)}): " + ", ".join(
        f"{r.level} {r.mean:.3f} (n={r.n})" for r in rows.itertuples())
        for factor, rows in part.groupby("factor", sort=False)]


def tau_batch_lines(cells: pd.DataFrame) -> list[str]:
    out = []
    for metric, part in cells.groupby("metric", sort=False):
        best = part.loc[part["mean"].idxmax()]
        out.append(f"{metric_label(metric)}: best cell τ {best['tau_bin']}, batch {best['batch_size']}: "
                   f"{best['mean']:.3f} (n={best['n']}) of {len(part)} cells")
    return out


def curve_lines(exp: Experiment) -> list[str]:
    counts = rung_reached(exp.table["epochs_run"], exp.rungs).value_counts()
    order = rung_reached(pd.Series([0, *exp.rungs]), exp.rungs)
    top = exp.table.loc[exp.table["best_knn"].idxmax()]
    return [f"{len(exp.table)} trials; last rung reached: "
            + ", ".join(f"{r}: {counts[r]}" for r in order if r in counts)
            + f"; highest kNN {top['best_knn']:.3f} at epoch {top['best_epoch']} (#{top['optuna_number']}, "
            f"{top['status']})"]


def write_report(exp: Experiment, sections: list[Section], skipped: list[str], out: Path) -> Path:
    lines = header(exp)
    for s in sections:
        lines += ["", f"## {s.title}", ""]
        if s.image is not None:
            lines += [f"![{s.title}]({s.image.name})", ""]
        lines += [f"- {line}" for line in s.lines]
        if s.body:
            lines += ["", s.body]
        if s.files:
            lines += ["", "Numbers: " + ", ".join(f"[{f.name}]({f.name})" for f in s.files)]
    if skipped:
        lines += ["", "## Not computed", ""] + [f"- {line}" for line in skipped]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
