"""Effect estimates you can read: adjusted for the other sampled factors, with 95 % intervals and
Holm-corrected p-values, one scope (rung = epoch) at a time.

Raw group means mislead in both kinds of experiment this project runs. A TPE search samples
adaptively and its factors are confounded (the trials without mix-back may also be the ones with
noise on), so each factor's effect is an OLS coefficient over all sampled factors together. A grid of
one-factor-at-a-time variants (``paper_ablations.yaml``) is not a factorial, so each variant is
compared with the default, never pooled into factors. Its seeds are shared by design (every variant
runs with seeds 0, 1, 2), so the seed is a block: one OLS of kNN on variant + seed (fixed effects)
compares each variant with the default within seeds, and the seed-to-seed spread that all variants
share leaves the residual. Holm runs over the variants. Without a shared block the comparison is
Welch's t against the default.

Each rung is its own scope: trials are compared at the same epoch. The first rung holds every trial;
later rungs hold the ones ASHA promoted, which were selected on the outcome, so their estimates are
conditional on having been good early.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution
from scipy import stats

from analysis.load import Experiment
from uclser_tune.evaluation.stats import holm

LEVEL = 0.95
MIN_N = 3  # a comparison with fewer trials on either side is flagged as too small to read
MIN_RESID_DF = 3  # a regression with fewer residual degrees of freedom gives no interval
MAG_RESID_DF = 10  # magnitudes (one slope per op parameter) join the regression only above this
MAG_MIN_N = 10  # ... and only for an op that is on in at least this many trials
COLUMNS = ["factor", "level", "reference", "estimate", "ci_low", "ci_high", "p_holm", "n_level", "n_reference",
           "scope", "method"]
TOO_SMALL = "n too small to read"
BLOCKS = ("seed", "replicate")  # grid axes shared by every variant by design: blocks, not treatments


@dataclass
class Term:
    """One regression column: the trials' values of a 0/1 indicator or a centred slope, and which trials
    count as the level and the reference (for n)."""

    factor: str
    level: str
    reference: str
    x: np.ndarray
    n_level: int
    n_reference: int
    magnitude: bool = False
    block: bool = False  # in the model, not a finding: no row, not in the Holm family

    def __eq__(self, other: object) -> bool:
        """Field by field, the column by its values: the generated ``==`` would compare ``x`` elementwise and
        ask the resulting array for one truth value, which raises whenever two terms share their labels."""
        if not isinstance(other, Term):
            return NotImplemented
        return (all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name != "x")
                and np.array_equal(self.x, other.x))


def is_grid(table: pd.DataFrame) -> bool:
    """One-factor-at-a-time variants against a ``default`` (paper_ablations.yaml)."""
    return "param_variant" in table and "default" in set(table["param_variant"].dropna())


def scopes(exp: Experiment) -> list[tuple[str, str]]:
    """(scope label, kNN column) per rung the table has; the first one holds every trial."""
    out = []
    for i, r in enumerate(r for r in exp.rungs if f"knn_e{r}" in exp.table):
        who = "every trial that reached it" if i == 0 else "trials ASHA promoted to it"
        out.append((f"rung e{r} (epoch {r}; {who})" if exp.asha else f"epoch {r} (final)", f"knn_e{r}"))
    return out


def _distribution(exp: Experiment, name: str) -> BaseDistribution | None:
    return next((t.distributions[name] for t in exp.study.get_trials(deepcopy=False) if name in t.distributions),
                None)


def _log_param(exp: Experiment, name: str) -> bool:
    return bool(getattr(_distribution(exp, name), "log", False))


def _indicator(factor: str, level: str, reference: str, on: np.ndarray, among: np.ndarray | None = None) -> Term:
    among = np.ones_like(on, dtype=bool) if among is None else among
    return Term(factor, level, reference, (on & among).astype(float), int((on & among).sum()),
                int((~on & among).sum()))


def _slope(factor: str, values: np.ndarray, among: np.ndarray, log: bool, magnitude: bool = False) -> Term:
    """A slope within the trials where the factor applies, centred there so the indicator it hangs off
    stays the effect at the mean value."""
    v = np.where(among, values, np.nan).astype(float)
    v = np.log10(v) if log else v
    centred = np.where(among, v - np.nanmean(v), 0.0) if among.any() else np.zeros(len(v))
    unit = "per ×10" if log else "per +1"
    n = int(among.sum())
    return Term(factor, unit, "its mean", centred, n, n, magnitude)


def sampler_of(exp: Experiment) -> str | None:
    """The space's sampler (``tpe`` when the file does not say), None when the space file is not found."""
    return None if exp.space is None else exp.space.get("sampler", "tpe")


def startup_trials(exp: Experiment) -> int | None:
    """How many trials a TPE search ran before TPE took over: its balanced start-up design or TPE's own
    random start-up, which is as long (``max(10, design)``, as the driver sets it). None for samplers
    that do not adapt (random, grid, design) or an unknown one."""
    if sampler_of(exp) != "tpe":
        return None
    return max(10, int(exp.meta.get("startup_design") or 0))


PHASE = "sampler phase"


def phase_term(exp: Experiment, part: pd.DataFrame) -> Term | None:
    """TPE proposes configs from the results so far, so whatever it learns to prefer is also what runs
    late: a factor's effect and the phase are confounded (and any drift over the search, e.g. a machine
    getting busier, loads on the factors TPE ends up keeping). The term "adaptive (TPE) vs start-up"
    (1 for trials numbered from the end of the start-up on) takes the phase out of the factors' rows.
    None when the search has no adaptive phase."""
    n0 = startup_trials(exp)
    if n0 is None or "optuna_number" not in part:
        return None
    adaptive = part["optuna_number"].to_numpy() >= n0
    return _indicator(PHASE, "adaptive (TPE)", f"start-up (trials 0-{n0 - 1})", adaptive)


def order_terms(part: pd.DataFrame, ops: list[str]) -> list[Term]:
    """One term per pair of ops (a, b), a before b in the candidate order: +1/2 where both are on and a
    runs first, -1/2 where both are on and b runs first, 0 otherwise. Its coefficient is the difference
    "a before b" minus "b before a" among the trials with both on. The both-on interaction itself is not
    in the model; it is orthogonal to these terms when each pair's two orders are balanced at every
    design point, as a design with an even number of replicates makes them (``SearchSpace.design_cells``).
    ``_regression`` adds them to the model one pair at a time."""
    out = []
    for a, b in itertools.combinations(ops, 2):
        pa, pb = part[f"pos_{a}"].to_numpy(), part[f"pos_{b}"].to_numpy()
        first, second = (pa > 0) & (pb > 0) & (pa < pb), (pa > 0) & (pb > 0) & (pa > pb)
        out.append(Term(f"order:{a},{b}", f"{a} before {b}", f"{b} before {a}", 0.5 * first - 0.5 * second,
                        int(first.sum()), int(second.sum())))
    return out


def block_terms(part: pd.DataFrame) -> list[Term]:
    """A design's replicate (its seed) as a block: one indicator per replicate after the first."""
    if "param_replicate" not in part:
        return []
    levels = part["param_replicate"].astype(str)
    first, *rest = sorted(set(levels))
    return [Term("replicate", lvl, first, (levels == lvl).to_numpy(float), int((levels == lvl).sum()),
                 int((levels != lvl).sum()), block=True) for lvl in rest]


def terms(exp: Experiment, part: pd.DataFrame) -> list[Term]:
    """The sampled factors of the trials in ``part``, as regression columns (only those that vary): the
    ops on/off, their magnitudes, mix-back and the other params; for a ``sampler: design`` search also
    the pairwise order of the ops and its replicate block (the design's own model); for a TPE search the
    sampler's phase."""
    out: list[Term] = []
    ops = [c.removeprefix("pos_") for c in part.columns if c.startswith("pos_")]
    params = {c.removeprefix("param_") for c in part.columns if c.startswith("param_")}
    for op in ops:
        on = part[f"pos_{op}"].to_numpy() > 0
        out.append(_indicator(f"op:{op}", "on", "off", on))
        for name in sorted(p for p in params if p.startswith(f"{op}_")):
            values = part[f"param_{name}"].to_numpy(dtype=float)
            out.append(_slope(name, values, on & np.isfinite(values), _log_param(exp, name), magnitude=True))
    mixed = part["mixback"].astype(bool).to_numpy()
    out.append(_indicator("mixback", "on", "off", mixed))
    out.append(_indicator("mixback_energy_adjust", "adjusted", "unadjusted",
                          part["mixback_energy_adjust"].astype(bool).to_numpy(), among=mixed))
    if "param_views.mixback_alpha" in part:
        out.append(_slope("mixback_alpha", part["mixback_alpha"].to_numpy(dtype=float), mixed, log=True))
    skip = {"views.mixback", "views.mixback_alpha", "views.mixback_energy_adjust", "replicate"}
    for name in sorted(params - skip):
        if name.startswith(("use_", "order_")) or any(name.startswith(f"{op}_") for op in ops):
            continue  # ops are read from pos_<op>; order as positions (importance), not Lehmer digits
        values = part[f"param_{name}"]
        if not isinstance(_distribution(exp, name), CategoricalDistribution) and values.nunique() > 3:
            out.append(_slope(name, values.to_numpy(dtype=float), values.notna().to_numpy(),
                              _log_param(exp, name)))
            continue
        levels = values.astype(str)
        reference = levels.value_counts().index[0]  # the most common level
        out += [_indicator(name, lvl, reference, (levels == lvl).to_numpy()) for lvl in sorted(set(levels))
                if lvl != reference]
    if sampler_of(exp) == "design":
        out += order_terms(part, ops) + block_terms(part)
    phase = phase_term(exp, part)
    if phase is not None:
        out.append(phase)
    return [t for t in out if np.ptp(t.x) > 0 and t.n_level > 0 and t.n_reference > 0]  # only what varies


def ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Coefficients, their standard errors and the residual df of ``y ~ X`` (X has the intercept)."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    df = len(y) - X.shape[1]
    sigma2 = float(np.sum((y - X @ beta) ** 2)) / df
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(X.T @ X)))
    return beta, se, df


def _estimable(candidates: list[Term], n: int) -> list[Term]:
    """The terms, in order, that add to the rank of the design (a term the others fix, e.g. an op on in
    exactly the trials where another is, is left out), or none when the residual df would be too few."""
    X, kept = np.ones((n, 1)), []
    for t in candidates:
        trial = np.column_stack([X, t.x])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            X, kept = trial, [*kept, t]
    return kept if n - X.shape[1] >= MIN_RESID_DF else []


def _regression(exp: Experiment, part: pd.DataFrame, metric: str, scope: str) -> list[dict]:
    """One OLS over the factor terms (blocks in the model, not in the rows); then, for a design, each
    pair's order term added to that model on its own (``order_terms``): one order column per pair at a
    time, so each pair's row is its order effect averaged over the random orders of the other ops (the
    orders are randomised, so that average is estimated without bias; 28 pair columns at once would leave
    64 trials almost no power). Holm runs over every row of the scope together."""
    y = part[metric].to_numpy(dtype=float)
    all_terms = terms(exp, part)
    pairs = [t for t in all_terms if t.factor.startswith("order:")]
    factors = [t for t in all_terms if not t.factor.startswith("order:")]
    # blocks first, then the best-supported terms: a term the others fix is then one with few trials on a side
    wanted = [t for t in factors if t.block] + sorted((t for t in factors if not t.magnitude and not t.block),
                                                      key=lambda t: -min(t.n_level, t.n_reference))
    main = _estimable(wanted, len(y))
    # a magnitude slope joins when its op is on in enough trials and the residual df stay large
    mags = [t for t in factors if t.magnitude and t.n_level >= MAG_MIN_N]
    used = _estimable(main + mags, len(y)) if len(y) - 1 - len(main) - len(mags) >= MAG_RESID_DF else main
    rows = []
    if used:
        X = np.column_stack([np.ones(len(y)), *(t.x for t in used)])
        fits = []  # (term, estimate, se, df)
        beta, se, df = ols(X, y)
        fits += [(t, beta[i], se[i], df) for i, t in enumerate(used, start=1) if not t.block]
        pair_df = None
        for t in pairs:
            with_pair = np.column_stack([X, t.x])
            if np.linalg.matrix_rank(with_pair) == with_pair.shape[1] and len(y) - with_pair.shape[1] >= MIN_RESID_DF:
                b, s, pair_df = ols(with_pair, y)
                fits.append((t, b[-1], s[-1], pair_df))
        p = np.array([2 * stats.t.sf(abs(b / s), d) for _, b, s, d in fits])
        p_holm = holm(p)
        n_blocks = sum(t.block for t in used)
        method = (f"OLS over {len(used) - n_blocks} factor terms (n={len(y)}, residual df {df}); {LEVEL:.0%} CI per "
                  f"row; Holm over the {len(fits)} rows of this scope")
        if n_blocks:
            method += f"; replicate a block ({n_blocks} fixed-effect column(s), no row)"
        if pair_df is not None:
            method += (f"; the design's model: each order:a,b row is that model plus the pair's own order column "
                       f"(residual df {pair_df}): a before b minus b before a where both are on, averaged over the "
                       "random orders of the other ops")
        if any(t.factor == PHASE for t in used):
            method += f"; {PHASE}: adaptive (TPE) vs start-up trials, a term of the model"
        aliased = [t.factor for t in wanted if t not in main]
        if aliased:
            method += (f"; ALIASED: {', '.join(aliased)} left out (fixed by the other factors here), "
                       "so these rows may carry its effect")
        for (t, b, s, d), ph in zip(fits, p_holm):
            half = stats.t.ppf(0.5 + LEVEL / 2, d) * s
            small = min(t.n_level, t.n_reference) < MIN_N
            rows.append({"factor": t.factor, "level": t.level, "reference": t.reference, "estimate": b,
                         "ci_low": b - half, "ci_high": b + half, "p_holm": ph,
                         "n_level": t.n_level, "n_reference": t.n_reference, "scope": scope,
                         "method": method + (f"; {TOO_SMALL} (< {MIN_N} trials on one side)" if small else "")})
    why = (f"not estimated ({TOO_SMALL}): {len(y)} trials; a factor needs residual df >= {MIN_RESID_DF} and must "
           f"not be fixed by the others, a magnitude slope also its op on in >= {MAG_MIN_N} trials and residual "
           f"df >= {MAG_RESID_DF}")
    estimated = {(r["factor"], r["level"]) for r in rows}
    rows += [{"factor": t.factor, "level": t.level, "reference": t.reference, "estimate": np.nan,
              "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan, "n_level": t.n_level,
              "n_reference": t.n_reference, "scope": scope, "method": why}
             for t in all_terms if (t.factor, t.level) not in estimated and not t.block]
    return rows


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Mean difference a - b, its 95 % CI and the two-sided p of Welch's t (NaN when either n < 2)."""
    diff = float(np.mean(a) - np.mean(b)) if len(a) and len(b) else np.nan
    if len(a) < 2 or len(b) < 2:
        return diff, np.nan, np.nan, np.nan
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(LEVEL)
    return diff, float(ci.low), float(ci.high), float(res.pvalue)


def blocks(part: pd.DataFrame) -> list[str]:
    """The block columns of a grid: a ``BLOCKS`` param with two or more levels, at least one of which
    is shared by two variants (so comparisons within it exist)."""
    out = []
    for name in BLOCKS:
        col = f"param_{name}"
        if col in part and part[col].nunique() > 1 and (part.groupby(col)["param_variant"].nunique() > 1).any():
            out.append(col)
    return out


def paired_variants(part: pd.DataFrame, metric: str, block_cols: list[str]) -> dict[str, tuple] | None:
    """Each variant against the default by OLS of ``metric`` on variant + blocks (fixed effects):
    variant → (estimate, CI low, CI high, p, residual df). None when the residual df would be < 1 or
    the default has no trial."""
    y = part[metric].to_numpy(dtype=float)
    variants = part["param_variant"].to_numpy()
    others = [v for v in pd.unique(variants) if v != "default"]
    if "default" not in set(variants) or not others:
        return None
    X = np.column_stack([np.ones(len(y)), *((variants == v).astype(float) for v in others)])
    for col in block_cols:
        levels = part[col].astype(str).to_numpy()
        for lvl in sorted(set(levels))[1:]:  # the first level is the block's reference
            trial = np.column_stack([X, (levels == lvl).astype(float)])
            if np.linalg.matrix_rank(trial) == trial.shape[1]:
                X = trial
    if len(y) - X.shape[1] < 1:
        return None
    beta, se, df = ols(X, y)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    p = 2 * stats.t.sf(np.abs(beta / se), df)
    return {v: (beta[i], beta[i] - half[i], beta[i] + half[i], p[i], df) for i, v in enumerate(others, start=1)}


def _variants(part: pd.DataFrame, metric: str, scope: str, paired: bool = True) -> list[dict]:
    groups = {v: g[metric].to_numpy(dtype=float) for v, g in part.groupby("param_variant", sort=False)}
    ref = groups.get("default", np.array([]))
    others = [v for v in groups if v != "default"]
    block_cols = blocks(part) if paired else []
    fit = paired_variants(part, metric, block_cols) if block_cols else None
    if fit is not None:
        df = next(iter(fit.values()))[4]
        names = " + ".join(c.removeprefix("param_") for c in block_cols)
        tests = {v: fit[v][:4] for v in others}
        how = (f"OLS of kNN on variant + {names} ({names} a block shared by design: fixed effects, so each "
               f"variant is compared with the default within {names}; n={len(part)}, residual df {df}), "
               f"{LEVEL:.0%} CI per row, Holm over the {len(others)} variants")
    else:
        tests = {v: welch(groups[v], ref) for v in others}
        how = f"Welch's t against the default, {LEVEL:.0%} CI per row, Holm over the {len(others)} variants"
    p_holm = holm(np.array([tests[v][3] for v in others]))
    rows = []
    for v, p in zip(others, p_holm):
        diff, lo, hi, _ = tests[v]
        small = min(len(groups[v]), len(ref)) < MIN_N
        method = how if np.isfinite(p) else "no interval: Welch's t needs >= 2 trials per side"
        rows.append({"factor": "variant", "level": v, "reference": "default", "estimate": diff, "ci_low": lo,
                     "ci_high": hi, "p_holm": p, "n_level": len(groups[v]), "n_reference": len(ref),
                     "scope": scope, "method": method + (f"; {TOO_SMALL} (< {MIN_N} trials on one side)"
                                                         if small else "")})
    return rows


def effects_adjusted(exp: Experiment, paired: bool = True) -> pd.DataFrame:
    """The ``effects_adjusted.csv`` table: one row per factor level against its reference, per scope.
    ``paired=False`` compares a grid's variants by Welch's t even where a block is shared."""
    rows: list[dict] = []
    grid = is_grid(exp.table)
    for scope, metric in scopes(exp):
        part = exp.table[exp.table[metric].notna()]
        if grid:
            rows += _variants(part, metric, scope, paired)
        elif len(part):
            rows += _regression(exp, part.reset_index(drop=True), metric, scope)
    return pd.DataFrame(rows, columns=COLUMNS)


def rung_survival(exp: Experiment) -> pd.DataFrame | None:
    """Per ASHA rung: trials that reached it, the share of the finished trials that is, and the share
    ``1 / reduction_factor^k`` synchronous halving would keep at rung k. None without ASHA."""
    if not exp.asha:
        return None
    done = exp.table[exp.table["status"] != "RUNNING"]
    rf = float(exp.asha["reduction_factor"])
    reached = [int((done["epochs_run"] >= r).sum()) for r in exp.rungs]
    return pd.DataFrame({"rung": [f"e{r}" for r in exp.rungs], "n_reached": reached,
                         "expected": [min(1.0, rf ** -k) for k in range(len(exp.rungs))],
                         "actual": [n / max(1, len(done)) for n in reached]})
