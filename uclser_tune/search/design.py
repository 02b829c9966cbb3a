"""Balanced designs over a search space: ``sampler: design`` and the start-up design of a sampled search.

A design is an orthogonal array over the space's two-level factors (ops' ``use_<op>`` switches and
two-way categoricals), so that every factor is on in half the trials and every pair takes all four
combinations equally often: on/off effects are then estimable and uncorrelated, which an adaptive
sampler's own trials do not give (it soon stops trying the levels it learns to avoid). The arrays
come from Sylvester's Hadamard matrices (Plackett-Burman); ``sampler: design`` folds them over for
resolution IV and crosses them with the other categoricals and with random op orders.

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

    def design_points(self, seed: int) -> list[dict[str, Any]]:
        """The design's points: a resolution IV two-level fractional factorial (``fractional_factorial``)
        over the two-level factors, crossed with every combination of the categoricals with more than
        two choices (a product of orthogonal arrays is one: every level of every factor equally often,
        every pair of factors' levels in proportion), in random order."""
        rng = np.random.default_rng(seed)
        two, many = self.design_factors()
        rows: list[dict[str, Any]] = [{}]
        if two:
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
