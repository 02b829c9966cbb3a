"""The whole analysis of one experiment dir: numbers as CSV, figures as PNG, ``report.md`` linking them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from analysis import effects, importance, paper_tables, plots, report, stats, trust
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
    recovered = trust.RATES  # planted-truth recovery per reading: what the report may show
    adjusted_trust, adjusted_line = report.adjusted_trust(exp)  # the rate of this search's sampler and model

    progress("adjusted effects (regression / variants against the default) ...")
    adjusted = stats.effects_adjusted(exp)
    adjusted.to_csv(out / "effects_adjusted.csv", index=False)
    grid = stats.is_grid(exp.table)
    if adjusted["ci_low"].notna().any():
        method = (f"each variant against the default at the last epoch ({adjusted['method'].iloc[0]}); variants "
                  "change one thing each, so they are never pooled into factors" if grid
                  else "an OLS regression over all sampled factors per scope (Holm over its rows); a scope is one "
                  "rung, trials compared at the same epoch. The first rung holds every trial; later rungs only "
                  "those ASHA promoted (selected on the outcome), and a factor the others fix there is left "
                  "out, so its effect may load on the rows aliased with it")
        sections.append(Section(
            "Adjusted effects (95 % CI, Holm-corrected p)",
            [f"estimates from {method}", adjusted_line,
             *(report.adjusted_lines(adjusted) if adjusted_trust != "hidden" else [])],
            plots.adjusted_effects(adjusted, out / "effects_adjusted.png"), [out / "effects_adjusted.csv"]))
    else:
        skipped.append("adjusted effects: no scope has enough trials for an interval")

    progress("parameter importance (fANOVA, PED-ANOVA, bootstrap stability) ...")
    imp, imp_skipped = importance.importances(exp)
    skipped += [f"importance, {line}" for line in imp_skipped]
    imp.to_csv(out / "importance.csv", index=False)
    stable = importance.stability(exp)
    files = [out / "importance.csv"]
    if stable is not None:
        stable.to_csv(out / "importance_stability.csv", index=False)
        files.append(out / "importance_stability.csv")
    if imp["importance"].notna().any():
        sections.append(Section("Parameter importance", report.importance_scope(exp)
                                + report.importance_lines(imp, stable, recovered=recovered),
                                plots.importance(imp, out / "importance.png"), files))
        first = next(r for r in exp.rungs if f"knn_e{r}" in exp.table)
        study = importance.scope_study(exp, f"knn_e{first}")
        fanova = imp[(imp["evaluator"] == "fanova") & (imp["rung"] == f"e{first}")].dropna(subset=["importance"])
        params = list(fanova.nlargest(6, "importance")["param"]) or importance.all_params(study)[:6]
        sections.append(Section(
            "Parallel coordinates", [(f"every trial that reached epoch {first}, coloured by its kNN there; axes: "
                                     f"the {len(params)} most important parameters by fANOVA")],
            plots.parallel(study, params, out / "parallel.png", f"Trials at epoch {first}: {', '.join(params)}")))

    progress("best so far, rung survival, curves ...")
    sections.append(Section("Best so far", [(f"{int((exp.table['status'] == 'COMPLETE').sum())} COMPLETE trials; the "
                                            "x axis on the right is compute: the sum of epochs run so far")],
                            plots.best_so_far(exp.table, out / "best_so_far.png")))
    survival = stats.rung_survival(exp)
    if survival is not None:
        survival.to_csv(out / "rung_survival.csv", index=False)
        sections.append(Section("ASHA rung survival", report.survival_lines(survival),
                                plots.rung_survival(survival, out / "rung_survival.png"), [out / "rung_survival.csv"]))

    progress("raw means per level (positions, mix-back, sampling, encoder) ...")
    obs = effects.observations(exp)
    rows = effects.effects(obs)
    rows.to_csv(out / "effects.csv", index=False)
    for title, prefix, xlabel, name in [
            ("Position of each op in the order (raw means, not adjusted)", "position:",
             "position in the order (1 = first)", "positions.png"),
            ("Mix-back, patch sampling, encoder (raw means, not adjusted)", "", "level", "config_effects.png")]:
        chosen = obs["factor"].str.startswith(prefix) if prefix else ~obs["factor"].str.contains(":")
        if not chosen.any() or grid:
            skipped.append(f"{title.lower()}: " + ("a grid of one-factor-at-a-time variants is read per variant "
                                                   "(paper tables), not pooled into factors" if grid
                                                   else "nothing varied"))
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
    if grid:
        sections.append(Section("kNN per epoch of each variant", ["mean over the seeds of each variant, band ±1 sd"],
                                plots.variant_curves(exp.table, out / "variant_curves.png")))

    if paper_tables.has_variants(exp.table):
        progress("paper Tables 1 and 2 ...")
        for name, frame in paper_tables.paper_tables(exp.table).items():
            frame.to_csv(out / f"paper_{name}.csv", index=False)
            text = paper_tables.to_markdown(frame)
            (out / f"paper_{name}.md").write_text(text + "\n")
            filled = int((frame["n"] > 0).sum())
            sections.append(Section(f"Paper {name.replace('table', 'Table ')} (COMPLETE trials per variant)",
                                    [(f"{filled} of {len(frame)} rows have a COMPLETE trial; the paper's column is "
                                     "best val kNN accuracy, set it against the best-over-epochs column")], None,
                                    [out / f"paper_{name}.csv", out / f"paper_{name}.md"], text))
    verdict = (report.verdict_lines(exp, adjusted, extra=[adjusted_line]) if adjusted_trust != "hidden"
               else [adjusted_line])
    path = report.write_report(exp, sections, skipped, out, verdict)
    progress(f"wrote {path}")
    return path
