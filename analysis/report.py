"""``report.md``: a header on the experiment, then one section per analysis with its PNG, a line or
two of reading generated from the numbers, and links to the CSVs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats as scipy_stats

from analysis import stats
from analysis.load import Experiment, rung_reached
from analysis.plots import metric_label
from analysis.trust import ADJUSTED, DESIGN_RATES, DESIGN_SOURCE, HIDE, RATES, SOURCE, TRUSTED
from uclser_tune.search import results
from uclser_tune.search.spaces import SPACES_DIR
from uclser_tune.search.state import LOST_NOTE


@dataclass
class Section:
    title: str
    lines: list[str]
    image: Path | None = None
    files: list[Path] = field(default_factory=list)
    body: str = ""


def signed(x: float) -> str:
    return f"{round(x, 3) + 0.0:+.3f}".replace("-", "−")  # + 0.0: no "−0.000"


def relative(path: str | Path) -> str:
    """A path as the report prints it: relative to the repository when under it, else relative as given,
    else only its last two parts (a report names no machine's folders)."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    for root in (SPACES_DIR.parent, Path.cwd()):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(Path(*path.parts[-2:]))


def header(exp: Experiment) -> list[str]:
    counts = exp.table["status"].value_counts()
    space = relative(exp.meta["space"]) + ("" if exp.space else " (file not found)")
    asha = exp.asha
    rungs = ", ".join(f"e{r}" for r in exp.rungs) + (
        f" (grace {asha['grace_period']}, reduction {asha['reduction_factor']})" if asha else " (no ASHA)")
    lines = [f"- experiment: `{relative(exp.path)}` (study `{exp.meta['study_name']}` in `{exp.meta['storage']}`)",
             f"- space: `{space}`",
             (f"- trials: {len(exp.table)} ({', '.join(f'{k} {v}' for k, v in counts.items())}); table "
             f"{exp.table_source}"),
             f"- epoch budget {exp.max_epochs}; ASHA rungs {rungs}"]
    lost = exp.table.get("error", pd.Series(dtype=str)).fillna("").str.startswith(LOST_NOTE).sum()
    if lost:
        lines.append(f"- {lost} FAIL trial(s) lost: started after the last snapshot of a killed driver session, "
                     "they could not be resumed and a new trial took each one's place (their kNN up to the "
                     "epoch they reached stays in the table)")
    if exp.meta.get("startup_design"):
        lines.append(f"- the first {exp.meta['startup_design']} trials: the space's balanced start-up design "
                     "(every on/off parameter on in half of them, every pair balanced), then the sampler")
    n0 = stats.startup_trials(exp)
    if n0 is not None:
        lines.append(f"- adaptive sampling: trials 0-{n0 - 1} are the non-adaptive start-up, the later ones TPE's "
                     f"proposals, which follow the results; the adjusted effects carry a term for this phase (the "
                     f"'{stats.PHASE}' rows), so a factor TPE kept on late is not credited with what differs "
                     "between the phases (with few start-up trials on one of its levels, its interval widens)")
    if stats.sampler_of(exp) == "design":
        reps = (exp.space or {}).get("replicates", 1)
        lines.append(f"- sampler: design: a balanced two-level fractional factorial (resolution IV) over the on/off "
                     f"choices, random op orders (reversed in every second replicate), {reps} replicate(s) with "
                     "their own seeds; analysed with the design's own model: on/off rows, one order:a,b row per "
                     "pair of ops, the replicate a block")
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


def trust(reading: str, recovered: dict[str, tuple[int, int]] | None, source: str = SOURCE) -> tuple[str, str]:
    """How a reading may be shown, from its planted-truth recovery rate (``analysis.trust.RATES``, measured
    as ``source`` says): ("trusted" | "marked" | "hidden" | "untested", the phrase that states the rate with
    its scope). Trusted: recovered in at least TRUSTED of the searches; marked: in some, but fewer; hidden:
    in at most HIDE of them."""
    if not recovered or reading not in recovered:
        return "untested", f"{reading} has no planted-truth recovery rate (not in {source})"
    ok, n = recovered[reading]
    rate = f"recovered the planted truth in {ok} of {n} planted-truth searches ({source})"
    if ok / n >= TRUSTED:
        return "trusted", rate
    return ("hidden" if ok / n <= HIDE else "marked"), rate


def trust_line(reading: str, kind: str, rate: str) -> str:
    """One line on how far a reading is to be trusted, from ``trust`` (in capitals, not bold: bold is
    for results that pass Holm only)."""
    if kind == "hidden":
        return f"{reading} NOT SHOWN: this reading {rate}, so it is not to be read"
    if kind == "marked":
        return (f"{reading} READ WITH CARE: this reading {rate}, below the {TRUSTED:.0%} "
                "a reading needs to be shown unmarked")
    return f"{reading}: this reading {rate}" if kind == "trusted" else rate


def adjusted_trust(exp: Experiment) -> tuple[str, str]:
    """How the adjusted effects of ``exp`` may be shown (``trust``'s kind) and the line that says so, from
    the planted-truth rate measured for the sampler and model they come from. A ``sampler: design`` search
    is read with the design's own model (order rows, the replicate a block), so the rate that applies is the
    design recovery's (``DESIGN_RATES``); the line states it as the one that applies, and the TPE searches'
    rate beside it with its scope, as another sampler's and model's. Any other search takes the TPE rate."""
    if stats.sampler_of(exp) != "design":
        kind, rate = trust(ADJUSTED, RATES)
        return kind, trust_line(ADJUSTED, kind, rate)
    kind, rate = trust(ADJUSTED, DESIGN_RATES, DESIGN_SOURCE)
    ok, n = RATES[ADJUSTED]
    return kind, (f"{trust_line(ADJUSTED, kind, rate)}; that rate applies to this search, a design read with "
                  f"the design's own model. The rate measured on TPE searches, {ok} of {n} ({SOURCE}), is of "
                  "TPE's OLS without order rows and does not apply here")


def importance_scope(exp: Experiment) -> list[str]:
    """For a design search: the importance evaluators' rates are of TPE searches only (none was scored on a
    design), so their marks carry that scope."""
    if stats.sampler_of(exp) != "design":
        return []
    return [(f"the evaluators' planted-truth rates below were measured on TPE searches ({SOURCE}); none was "
            "measured on a design, so their marks are the TPE searches', not this design's")]


def importance_lines(rows: pd.DataFrame, stable: pd.DataFrame | None, top: int = 3,
                     recovered: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """Top parameters per evaluator and scope. An evaluator is shown as its planted-truth recovery rate
    allows (``trust``): a hidden one only as the line that says why, a marked one with its rate."""
    out = []
    for evaluator in dict.fromkeys(rows["evaluator"]):
        kind, rate = trust(evaluator, recovered)
        line = trust_line(evaluator, kind, rate)
        if kind == "hidden":
            line += " (its rows stay in importance.csv and its panel in the figure)"
        elif kind == "marked":
            line += "; a ranking to check against the adjusted effects, not a finding"
        out.append(line)
    for (evaluator, rung), part in rows.groupby(["evaluator", "rung"], sort=False):
        if trust(evaluator, recovered)[0] == "hidden":
            continue
        best = part.dropna(subset=["importance"]).nlargest(top, "importance")
        if best.empty:
            continue
        scope = "completed trials (last epoch)" if rung == "complete" else f"trials that reached epoch {rung[1:]}"
        na = int(part["importance"].isna().sum())
        out.append(f"{evaluator}, {scope} (n={part['n_trials'].iloc[0]}): "
                   + ", ".join(f"{p} {v:.2f}" for p, v in zip(best["param"], best["importance"]))
                   + (f"; n/a (not assessed): {na} of {len(part)} parameters" if na else ""))
    if stable is not None and trust("fanova", recovered)[0] != "hidden":
        first = stable.iloc[0]
        out.append(f"stability: fANOVA on {first['resamples']} bootstrap resamples of rung {first['rung']}: "
                   + ", ".join(f"{r.param} ranked first in {r.share_ranked_first:.0%}, median {r.median:.2f} "
                               f"(5-95 %: {r.q05:.2f}-{r.q95:.2f})" for r in stable.head(top).itertuples()))
    return out


def _interval(r: pd.Series | tuple) -> str:
    return (f"{r.factor} {r.level} vs {r.reference}: {signed(r.estimate)} [{signed(r.ci_low)}, {signed(r.ci_high)}], "
            f"p_holm {r.p_holm:.3g} (n={r.n_level}/{r.n_reference})")


def readable(part: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with an interval and enough trials, rows estimated on too few trials)."""
    read = part.dropna(subset=["ci_low"])
    small = read[read["method"].str.contains(stats.TOO_SMALL)]
    return read.drop(small.index), small


def adjusted_lines(rows: pd.DataFrame) -> list[str]:
    """Per scope: the rows that pass Holm (highlighted), those whose per-row 95 % CI excludes 0 without
    passing Holm (not highlighted), then what could not be read."""
    out = []
    for scope, part in rows.groupby("scope", sort=False):
        read, small = readable(part)
        read = read.reindex(read["estimate"].abs().sort_values(ascending=False).index)
        holm = read[read["p_holm"] < ALPHA]
        loose = read[((read["ci_low"] > 0) | (read["ci_high"] < 0)) & ~(read["p_holm"] < ALPHA)]
        aliased = read["method"].str.extract(r"ALIASED: (.*?) left out", expand=False).dropna()
        warning = (f" (not to be read: {aliased.iloc[0]} is aliased with the other factors here, and these rows "
                   "may carry its effect)") if len(aliased) else ""
        out.append(f"{scope}: {len(holm)} of {len(read)} readable rows pass Holm (p_holm < {ALPHA}){warning}"
                   + (": " + "; ".join(f"**{_interval(r)}**" for r in holm.itertuples()) if len(holm) else "")
                   + (f". {len(loose)} more with a per-row 95 % CI that excludes 0, not passing Holm (not a "
                      "finding): " + "; ".join(_interval(r) for r in loose.itertuples()) if len(loose) else ""))
        unread = part[part["ci_low"].isna() | part.index.isin(small.index)]
        if len(unread):
            out.append(f"{scope}: n too small to read: " + ", ".join(
                f"{r.factor} {r.level} (n={r.n_level}/{r.n_reference})" for r in unread.itertuples()))
    return out


ALPHA = 0.05  # family-wise level of the Holm correction
POWER = 0.8  # the power the trial estimate of the verdict aims for
VERDICT_LINES = 8


def _p(p: float) -> str:
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def _short(r: pd.Series | tuple) -> str:
    return (f"{r.factor} {r.level} vs {r.reference} {signed(r.estimate)} [{signed(r.ci_low)}, {signed(r.ci_high)}]"
            f" (n={r.n_level}/{r.n_reference}, p_holm {_p(r.p_holm)})")


def trials_to_resolve(estimate: float, se: float, n: int, family: int) -> int:
    """Trials (or seeds per variant) the same design would need for the effect, if it is as large as
    estimated and the noise stays as it is, to pass a Bonferroni 5 % level over ``family`` rows (Holm's
    strictest step) with POWER: the standard error shrinks as 1/sqrt(n), so n grows by
    ((z_(1-a/2m) + z_power) · se / |estimate|)^2 (normal approximation)."""
    z = scipy_stats.norm.ppf(1 - ALPHA / (2 * family)) + scipy_stats.norm.ppf(POWER)
    return max(n, math.ceil(n * (z * se / abs(estimate)) ** 2))


def verdict_lines(exp: Experiment, rows: pd.DataFrame, extra: list[str] | None = None) -> list[str]:
    """At most VERDICT_LINES lines: in the scope where every trial counts, what passes Holm, the largest
    effect that does not, how many trials would resolve it, and ``extra`` (what the tables below rest on)."""
    scope = rows["scope"].iloc[0] if len(rows) else None
    part = rows[rows["scope"] == scope] if scope is not None else rows
    read, _ = readable(part)
    family = int(part["p_holm"].notna().sum())
    n = int(exp.table[stats.scopes(exp)[0][1]].notna().sum())
    grid = stats.is_grid(exp.table)
    if read.empty:
        return [(f"Nothing to conclude: no effect could be estimated with an interval at {scope or 'any scope'} "
                 f"(n={n} trials); see the tables below.")]
    order = read["estimate"].abs().sort_values(ascending=False).index
    read = read.loc[order]
    holm, rest = read[read["p_holm"] < ALPHA], read[~(read["p_holm"] < ALPHA)]
    lines = [(f"Read at {scope}, n={n} trials; {len(holm)} of {family} effects pass Holm (family-wise "
              f"{ALPHA:.0%}; estimate [95 % CI], p_holm).")]
    if len(holm):
        shown = holm.head(4)
        lines.append("What matters: " + "; ".join(_short(r) for r in shown.itertuples())
                     + (f"; and {len(holm) - len(shown)} more in the table" if len(holm) > len(shown) else ""))
    else:
        lines.append("What matters: nothing is resolved at this family-wise level.")
    levels = rest[rest["reference"] != "its mean"]  # a slope's unit is not a level's: compared apart
    rest = levels if len(levels) else rest
    if len(rest):
        big = rest.loc[rest["estimate"].abs().idxmax()]
        se = (big["ci_high"] - big["ci_low"]) / 2 / scipy_stats.t.ppf(0.975, _df(big["method"]))
        unit, have = (("seeds per variant", int(big["n_level"])) if grid else ("trials", n))
        need = trials_to_resolve(big["estimate"], se, have, family)
        lines.append(f"Unresolved, the largest {'level ' if len(levels) else ''}effect: {_short(big)}.")
        lines.append(f"Power: if that effect is as large as estimated, about {need} {unit} ({need - have} more than "
                     f"the {have} here) at the current noise would pass Holm over {family} with {POWER:.0%} power "
                     "(Bonferroni bound, normal approximation, same design).")
    if exp.asha:
        lines.append("Later rungs hold only the trials ASHA promoted (selected on the outcome): their tables "
                     "below are conditional and are not part of this verdict.")
    lines += extra or []
    return lines[:VERDICT_LINES]


def _df(method: str) -> float:
    """The residual df a row's interval used, as its method states it; Welch's rows state none (normal)."""
    found = re.search(r"residual df (\d+)", method)
    return float(found.group(1)) if found else math.inf


def survival_lines(survival: pd.DataFrame) -> list[str]:
    return ["reached / expected share: " + ", ".join(
        f"{r.rung} {r.n_reached} ({r.actual:.0%} vs {r.expected:.0%})" for r in survival.itertuples())
        + ". Ray's ASHA is asynchronous: a trial is promoted when it is in the top 1/reduction of the results "
          "its rung has seen so far, so early trials are promoted against few rivals and more survive than "
          "synchronous halving keeps."]


def level_lines(effect_rows: pd.DataFrame, strip: str = "") -> list[str]:
    """Per factor, at the first rung (most trials compared at one epoch): each level's raw mean and n."""
    first = effect_rows["metric"].iloc[0]
    part = effect_rows[effect_rows["metric"] == first]
    return [f"{factor.removeprefix(strip)} ({metric_label(first)}, raw means): " + ", ".join(
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


def write_report(exp: Experiment, sections: list[Section], skipped: list[str], out: Path,
                 verdict: list[str] | None = None) -> Path:
    lines = [f"# Sensitivity analysis: {exp.path.name}", ""]
    if verdict:
        lines += ["## Verdict", "", *(f"- {line}" for line in verdict[:VERDICT_LINES]), "", "## The experiment", ""]
    lines += header(exp)
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
