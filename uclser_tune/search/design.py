"""Balanced designs over a search space: ``sampler: design`` and the start-up design of a sampled search.

A design is an orthogonal array over the space's two-level factors (ops' ``use_<op>`` switches and
two-way categoricals), so that every factor is on in half the trials and every pair takes all four
combinations equally often: on/off effects are then estimable and uncorrelated, which an adaptive
sampler's own trials do not give (it soon stops trying the levels it learns to avoid). The arrays
come from Sylvester's Hadamard matrices (Plackett-Burman); ``sampler: design`` folds them over for
resolution IV, gives a categorical with a power-of-two number of choices its own group of Hadamard
columns (the method of replacement) where that takes fewer runs than crossing it, crosses them with
the other categoricals, and draws random op orders.

``DesignSampler`` is a mixin of ``spaces.SearchSpace``: it reads the space's ``params``, ``use``,
``candidates``, ``order``, ``sampler``, ``startup`` and ``replicates``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

ENUMERATED = ("grid", "design")  # samplers whose every trial is enqueued up front (the searcher ends with them)


def lehmer_encode(order: list[str], items: list[str]) -> list[int]:
    """The Lehmer digits of ``order`` (a permutation of ``items``), the inverse of ``lehmer_decode``."""
    pool, digits = list(items), []
    for item in order[:-1]:
        digits.append(pool.index(item))
        pool.remove(item)
    return digits


def lehmer_decode(digits: list[int], items: list[str]) -> list[str]:
    """Permutation of ``items`` from Lehmer digits d_i ∈ [0, n-1-i] (the last digit is implicitly 0)."""
    pool, out = list(items), []
    for d in digits:
        out.append(pool.pop(d))
    return out + pool


def hadamard(runs: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order ``runs`` (a power of two): +-1 entries, orthogonal columns."""
    h = np.ones((1, 1), dtype=int)
    while len(h) < runs:
        h = np.block([[h, h], [h, -h]])
    return h


def two_level_runs(k: int) -> int:
    """The run count of the two-level array for ``k`` factors: the smallest power of two (at least 8)
    with more runs than factors, so every factor gets its own non-constant Hadamard column."""
    runs = 8
    while runs <= k:
        runs *= 2
    return runs


def fractional_factorial(k: int, rng: np.random.Generator) -> np.ndarray:
    """A balanced two-level design for ``k`` factors, levels +-1, resolution IV: ``k`` distinct
    non-constant columns of a Hadamard matrix (a Plackett-Burman orthogonal array: every factor at each
    level in half the runs, every pair of factors in all four combinations equally often), with random
    signs, then folded over (the array stacked on its negative), so that no main effect is aliased with
    a two-factor interaction. 2 · ``two_level_runs(k)`` runs, in random order; the full factorial (2^k
    runs, every combination once) when that is no larger."""
    runs = two_level_runs(k)
    if 2 ** k <= 2 * runs:
        full = np.array(list(itertools.product([-1, 1], repeat=k)), dtype=int)
        return full[rng.permutation(len(full))]
    columns = rng.permutation(np.arange(1, runs))[:k]
    half = hadamard(runs)[:, columns] * rng.choice([-1, 1], size=k)
    design = np.vstack([half, -half])
    return design[rng.permutation(len(design))]


def column_span(generators: list[int]) -> set[int]:
    """The Hadamard columns a factor built on the columns ``generators`` fixes: every non-empty product of
    them. In Sylvester's matrix column j has entry (-1)^popcount(i & j) in row i, so the product of columns
    a and b is column a XOR b, and the products of the generators are their non-zero XOR combinations."""
    out = {0}
    for g in generators:
        out |= {x ^ g for x in out}
    return out - {0}


def is_power_of_two(m: int) -> bool:
    return m >= 2 and m & (m - 1) == 0


def mixed_runs(k: int, levels: list[int]) -> int:
    """The Hadamard order ``mixed_design`` uses for ``k`` two-level factors and categoricals with
    ``levels`` choices (powers of two): the smallest power of two (at least ``two_level_runs(k)``) with a
    column bit for every generator of every categorical (each gets log2(m) bits of its own, so any two
    are balanced against each other) and, besides the columns those fix, a column for every two-level
    factor. The design has twice as many runs (folded over)."""
    runs = two_level_runs(k)
    dims = sum(m.bit_length() - 1 for m in levels)
    while runs.bit_length() - 1 < dims or runs - 1 - sum(m - 1 for m in levels) < k:
        runs *= 2
    return runs


def mixed_design(k: int, levels: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A balanced design for ``k`` two-level factors (levels +-1) and categoricals with ``levels`` choices,
    each a power of two (levels 0 .. m-1): the two-level factors and the categoricals an orthogonal array
    of strength 2, by the method of replacement (Addelman 1962; Wu and Hamada, "Experiments", ch. 7): a
    categorical with m = 2^p choices takes p generator columns of Sylvester's Hadamard matrix of order
    ``mixed_runs``, its level the p sign bits, and every product of them (m - 1 columns, ``column_span``)
    is kept from the two-level factors, which take ``k`` of the remaining columns with random signs. Then
    every choice appears equally often, at each level of every two-level factor equally often, and every
    pair of categoricals in all combinations equally often. Folded over (the array stacked on its negative:
    a categorical's bits flip, level m-1-l), so the two-level factors keep resolution IV as in
    ``fractional_factorial``; a categorical's contrasts that are products of an even number of its bits are
    unchanged by the fold, so they may alias two-factor interactions of two-level factors (its main effect
    stays orthogonal to every other main effect). 2 · ``mixed_runs`` runs in random order; returns (the
    two-level columns, the categoricals' level indices)."""
    runs = mixed_runs(k, levels)
    bits = rng.permutation(runs.bit_length() - 1)
    generators, fixed, start = [], set(), 0
    for m in levels:
        p = m.bit_length() - 1
        generators.append([1 << int(b) for b in bits[start:start + p]])
        fixed |= column_span(generators[-1])
        start += p
    free = np.array([c for c in range(1, runs) if c not in fixed])
    h = hadamard(runs)
    two = h[:, rng.permutation(free)[:k]] * rng.choice([-1, 1], size=k)
    cats = np.column_stack([sum((h[:, g] < 0).astype(int) << t for t, g in enumerate(gens)) for gens in generators])
    two = np.vstack([two, -two])
    cats = np.vstack([cats, np.array(levels) - 1 - cats])
    order = rng.permutation(len(two))
    return two[order], cats[order]


def crossed_size(k: int, levels: list[int]) -> int:
    """Runs of ``fractional_factorial(k)`` crossed with every combination of ``levels`` choices."""
    runs = two_level_runs(k)
    return (1 if k == 0 else min(2 ** k, 2 * runs)) * int(np.prod(levels, dtype=int))


class DesignSampler:
    """The designs of a search space (mixed into ``SearchSpace``)."""

    params: dict[str, Any]
    use: dict[str, Any]
    candidates: list[str]
    order: str
    sampler: str
    startup: str
    replicates: int

    def two_level_factors(self) -> dict[str, list]:
        """The Optuna params with exactly two choices: ops' ``use_<op>`` flags and two-way categoricals
        such as ``views.mixback`` (conditional ones included: they stay balanced where they apply)."""
        out = {k: d.choices for k, d in self.params.items() if d.kind == "categorical" and len(d.choices) == 2}
        out.update({f"use_{op}": d.choices for op, d in self.use.items()
                    if not isinstance(d, bool) and d.kind == "categorical" and len(d.choices) == 2})
        return out

    def startup_design(self, num_samples: int, seed: int) -> list[dict[str, Any]]:
        """The first trials of a sampled search: a two-level orthogonal array over the two-level factors.

        An adaptive sampler soon stops trying the levels it learns to avoid, so the ops it keeps on are
        on in nearly every trial and each other's proxies, and their effects cannot be read afterwards.
        The columns of a Sylvester-Hadamard matrix (Plackett-Burman) put every factor on in half of
        these trials and every pair in all four combinations equally often, so on/off effects are
        estimable and uncorrelated however the sampler goes on. The other params of these trials are
        the sampler's start-up (random) draws. None when the search is too short to spend a third of it
        on the design, or the space says ``startup: sampler`` (then the sampler's own start-up applies)."""
        factors = self.two_level_factors()
        if self.sampler in ENUMERATED or self.startup != "design" or not factors:
            return []
        runs = two_level_runs(len(factors))
        if 3 * runs > num_samples:
            return []
        rng = np.random.default_rng(seed)
        columns = rng.permutation(np.arange(1, runs))[: len(factors)]
        design = hadamard(runs)[rng.permutation(runs)][:, columns] * rng.choice([-1, 1], size=len(factors))
        return [{name: choices[int(level > 0)] for name, choices, level in zip(factors, factors.values(), row)}
                for row in design]

    def design_factors(self) -> tuple[dict[str, list], dict[str, list]]:
        """(two-level factors, categoricals with more than two choices) of a ``sampler: design`` space."""
        two = self.two_level_factors()
        many = {k: d.choices for k, d in self.params.items() if d.kind == "categorical" and len(d.choices) > 2}
        return two, many

    def embedded_categoricals(self) -> dict[str, list]:
        """The categoricals with more than two choices that ``design_points`` builds into the array
        (``mixed_design``) instead of crossing: those with a power-of-two number of choices, when that takes
        fewer runs than crossing them. A categorical with another number of choices (3, 5, 6, ...) is
        crossed: the array has a power-of-two number of runs, and its choices can be equally often at each
        level of a two-level factor only when twice their number divides the runs, which a number with an
        odd factor above 1 never does; crossing gives every choice each design point once."""
        two, many = self.design_factors()
        embed = {k: c for k, c in many.items() if is_power_of_two(len(c))}
        if not embed:
            return {}
        levels = [len(c) for c in embed.values()]
        return embed if 2 * mixed_runs(len(two), levels) < crossed_size(len(two), levels) else {}

    def design_points(self, seed: int) -> list[dict[str, Any]]:
        """The design's points: a resolution IV two-level fractional factorial (``fractional_factorial``)
        over the two-level factors, with the categoricals that ``embedded_categoricals`` names built into
        the same array (``mixed_design``: every choice equally often, balanced against every two-level
        factor and every other such categorical), crossed with every combination of the other categoricals
        with more than two choices (a product of orthogonal arrays is one: every level of every factor
        equally often, every pair of factors' levels in proportion), in random order."""
        rng = np.random.default_rng(seed)
        two, many = self.design_factors()
        embed = self.embedded_categoricals()
        many = {k: c for k, c in many.items() if k not in embed}
        rows: list[dict[str, Any]] = [{}]
        if embed:
            array, cats = mixed_design(len(two), [len(c) for c in embed.values()], rng)
            perms = [rng.permutation(len(c)) for c in embed.values()]  # which choice each level index is
            rows = [{**{name: choices[int(level > 0)] for (name, choices), level in zip(two.items(), row)},
                     **{name: choices[int(perm[i])] for (name, choices), perm, i in zip(embed.items(), perms, idx)}}
                    for row, idx in zip(array, cats)]
        elif two:
            rows = [{name: choices[int(level > 0)] for (name, choices), level in zip(two.items(), row)}
                    for row in fractional_factorial(len(two), rng)]
        crossed = [{**row, **dict(zip(many, combo))} for row in rows for combo in itertools.product(*many.values())]
        return [crossed[i] for i in rng.permutation(len(crossed))]

    def design_cells(self, seed: int) -> list[dict[str, Any]]:
        """Every trial of a ``sampler: design`` search, as Optuna params to enqueue: each design point
        ``replicates`` times (``replicate`` r sets the run's seed to base seed + r), each with a random
        order of the candidate ops, so that the relative order of every pair of ops that are on varies
        independently of the design. An odd replicate takes the reverse of the order the replicate before
        it drew for the same point, so with an even number of replicates every pair of ops runs in each
        order equally often at every design point (order terms orthogonal to the on/off factors).
        Magnitudes and other continuous params are left to the sampler (random). Trials in random order."""
        rng = np.random.default_rng([seed, 1])
        points = self.design_points(seed)
        cells = []
        for r in range(self.replicates):
            for i, point in enumerate(points):
                if r % 2 == 0:
                    order = [self.candidates[j] for j in rng.permutation(len(self.candidates))]
                else:
                    order = cells[(r - 1) * len(points) + i]["__order"][::-1]
                cells.append({**point, "replicate": r, **self.order_params(order), "__order": order})
        for cell in cells:
            del cell["__order"]
        return [cells[i] for i in rng.permutation(len(cells))]

    def order_params(self, order: list[str]) -> dict[str, Any]:
        """The Optuna params that make the ops run in ``order`` (none for a fixed or per-sample order)."""
        if len(self.candidates) < 2:
            return {}
        if self.order == "lehmer":
            return {f"order_d{i}": d for i, d in enumerate(lehmer_encode(order, self.candidates))}
        if self.order == "random_keys":
            return {f"order_key_{op}": (rank + 0.5) / len(order) for rank, op in enumerate(order)}
        return {}

    def design_problem(self) -> str | None:
        """Why this ``sampler: design`` space cannot be a design (None when it can, or is no design)."""
        if self.sampler != "design":
            return None
        if getattr(self, "variants", None):
            return "sampler: design takes on/off and categorical params and ops, not variants (a grid runs variants)"
        if "seed" in self.params:
            return "params.seed: a design sets the seed from its replicate; use replicates: N"
        if not any(d.kind == "categorical" for d in self.params.values()) and not any(
                not isinstance(u, bool) for u in self.use.values()):
            return "sampler: design needs at least one on/off op or categorical param to vary"
        return None
