"""The whole analysis of one experiment dir: numbers as CSV, figures as PNG, ``report.md`` linking them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from analysis import effects, importance, paper_tables, plots, report
from analysis.load import load_experiment
from analysis.report import Section


def analyse(exp_dir: str | Path, out: str | Path | None = None,
            progress: Callable[[str], None] = lambda _: None) -> Path:
    """Write everything under ``out`` (default ``EXPERIMENT_DIR/analysis``) and return report.md's path.
    Raises analysis.load.AnalysisError when the dir cannot be analysed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per in-memory rung study
    progress(f"reading {exp_dir} ...")
    exp = load_experiment(exp_dir)
    out = Path(out) if out is not None else exp.path / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    progress(f"{exp.path}: {len(exp.table)} trials ({exp.table_source}), rungs {exp.rungs}")
    sections, skipped = [], []

    progress("parameter importance (fANOVA, PED-ANOVA) ...")
    imp, imp_skipped = importance.importances(exp)
    skipped += [f"importance, {line}" for line in imp_skipped]
    imp.to_csv(out / "importance.csv", index=False)
    if len(imp):
        sections.append(Section("Parameter importance", report.importance_lines(imp),
                                plots.importance(imp, out / "importance.png"), [out / "importance.csv"]))

    progress("effects of ops, positions, mix-back, sampling, encoder ...")
    obs = effects.observations(exp)
    rows = effects.effects(obs)
    rows.to_csv(out / "effects.csv", index=False)
    onoff = effects.ops_onoff(rows)
    onoff.to_csv(out / "ops_onoff.csv", index=False)
    if onoff["diff"].notna().any():
        sections.append(Section("Each op on / off", report.onoff_lines(onoff),
                                plots.ops_onoff(onoff, out / "ops_onoff.png"), [out / "ops_onoff.csv"]))
    else:
        skipped.append("op on/off: no op is on in some trials and off in others")
    for title, prefix, xlabel, name in [
            ("Position of each op in the order", "position:", "position in the order (1 = first)",
             "positions.png"),
            ("Mix-back, patch sampling, encoder", "", "level", "config_effects.png")]:
        chosen = obs["factor"].str.startswith(prefix) if prefix else ~obs["factor"].str.contains(":")
        if not chosen.any():
            skipped.append(f"{title.lower()}: nothing varied")
            continue
        lines = report.level_lines(rows[rows["factor"].isin(set(obs.loc[chosen, "factor"]))], prefix)
        image = plots.by_level(obs[chosen], out / name, title, xlabel, prefix)
        sections.append(Section(title, lines, image, [out / "effects.csv"]))

    cells = effects.tau_batch(exp)
    if cells is None:
        skipped.append("τ × batch size: τ and batch size do not both vary")
    else:
        progress("τ × batch-size heatmap ...")
        cells.to_csv(out / "tau_batch.csv", index=False)
        sections.append(Section("τ × batch size", report.tau_batch_lines(cells),
                                plots.tau_batch(cells, out / "tau_batch.png"), [out / "tau_batch.csv"]))

    progress("kNN-vs-epoch curves ...")
    sections.append(Section("kNN per epoch by rung reached", report.curve_lines(exp),
                            plots.curves(exp.table, exp.rungs, out / "knn_curves.png")))

    if paper_tables.has_variants(exp.table):
        progress("paper Tables 1 and 2 ...")
        for name, frame in paper_tables.paper_tables(exp.table).items():
            frame.to_csv(out / f"paper_{name}.csv", index=False)
            text = paper_tables.to_markdown(frame)
            (out / f"paper_{name}.md").write_text(text + "\n")
            filled = int((frame["n"] > 0).sum())
            sections.append(Section(f"Paper {name.replace('table', 'Table ')} (COMPLETE trials per variant)",
                                    [f"{filled} of {len(frame)} rows have a COMPLETE trial"], None,
                                    [out / f"paper_{name}.csv", out / f"paper_{name}.md"], text))
    path = report.write_report(exp, sections, skipped, out)
    progress(f"wrote {path}")
    return path
