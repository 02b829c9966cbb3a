"""Search-space YAML → an Optuna define-by-run function that returns validated RunConfigs.

The schema is documented in ``search_spaces/README.md``. Everything is checked when the file is
loaded, before Ray starts: unknown keys, bad ranges, unknown or repeated ops, keys set twice, values
the run config rejects. Names are stable: ``use_<op>``, ``<op>_<param>`` (only suggested while the op
is on), ``order_d<i>`` (Lehmer digits) or ``order_key_<op>``, and dotted config keys for the rest, so
a parameter never changes its choices between trials.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from uclser_tune.config import FREE_FORM, ConfigError, RunConfig, config_from_dict
from uclser_tune.dotted import flatten, unflatten
from uclser_tune.search.design import (  # noqa: F401  (hadamard, fractional_factorial: the design's API here too)
    ENUMERATED,
    DesignSampler,
    fractional_factorial,
    hadamard,
    lehmer_decode,
    lehmer_encode,
)
from uclser_tune.search.space_schema import DistSpec, SpaceFile
from uclser_tune.validation import ValidationError, first_error
from uclser_tune.views.ops import validate_op_params

# The shipped spaces: package data of uclser_tune (a link to the repository's search_spaces/ in a checkout,
# resolved so that SPACES_DIR.parent is the repository there; a folder of the package in a wheel).
SPACES_DIR = (Path(__file__).resolve().parents[1] / "search_spaces").resolve()
CONFIGS_DIR = SPACES_DIR / "configs"  # shipped run configs for --config (e.g. the CPU setting)
VIEW_KEYS_OF_OPS = {"views.ops", "views.order", "views.op_params"}


class SpaceError(ValueError):
    """A malformed search-space file; the message names the file, the key and the reason."""


@dataclass
class Dist:
    """One searched value: float/int range (optionally log) or a categorical list."""

    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    choices: list = field(default_factory=list)
    when: str | None = None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_categorical(name, self.choices)

    def examples(self) -> list:
        return self.choices if self.kind == "categorical" else [self.low, self.high]


def to_dist(spec: DistSpec) -> Dist:
    """The sampling object of a checked distribution."""
    if spec.categorical is not None:
        return Dist("categorical", choices=spec.categorical, when=spec.when)
    low, high = spec.float_ or spec.int_
    return Dist(spec.kind, low, high, spec.log, when=spec.when)


@dataclass
class SearchSpace(DesignSampler):
    path: Path
    base: dict[str, Any]
    params: dict[str, Dist]
    candidates: list[str]
    use: dict[str, Dist | bool]
    magnitudes: dict[str, dict[str, Dist]]
    order: str
    variants: dict[str, dict[str, Any]]
    epochs: int
    asha: dict[str, int] | None
    trials: dict[str, int]
    resources: dict[str, float]
    sampler: str
    digest: str
    startup: str = "design"
    replicates: int = 1

    # ------------------------------------------------------------------ sampling
    def define_by_run(self, trial: optuna.Trial, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Suggest every parameter on ``trial`` and return the run config (``overrides`` win, e.g. the
        CLI's epoch budget); Ray passes the returned constants to the trial."""
        values: dict[str, Any] = {}
        if self.sampler == "design":  # a replicate of a design point: its own seed, a block in the analysis
            values["seed"] = self.base.get("seed", 0) + trial.suggest_int("replicate", 0, self.replicates - 1)
        if self.variants:
            name = trial.suggest_categorical("variant", list(self.variants))
            values.update(self.variants[name])
        for key, dist in self.params.items():
            if dist.when is None or values.get(dist.when, self.base.get(dist.when, True)):
                values[key] = dist.suggest(trial, key)
        if self.candidates:
            values.update(self._suggest_ops(trial))
        return {"run_config": self.build({**values, **(overrides or {})}).to_dict(), "optuna_number": trial.number}

    def _suggest_ops(self, trial: optuna.Trial) -> dict[str, Any]:
        on, op_params = [], {}
        for op in self.candidates:
            use = self.use[op]
            if use if isinstance(use, bool) else use.suggest(trial, f"use_{op}"):
                on.append(op)
                op_params[op] = {p: d.suggest(trial, f"{op}_{p}") for p, d in self.magnitudes.get(op, {}).items()}
        order = list(self.candidates)
        n = len(order)
        if self.order == "lehmer" and n > 1:
            order = lehmer_decode([trial.suggest_int(f"order_d{i}", 0, n - 1 - i) for i in range(n - 1)], order)
        elif self.order == "random_keys" and n > 1:
            keys = {op: trial.suggest_float(f"order_key_{op}", 0.0, 1.0) for op in order}
            order = sorted(order, key=lambda op: keys[op])
        return {"views.ops": [op for op in order if op in on],
                "views.order": "random_per_sample" if self.order == "random_per_sample" else "fixed",
                "views.op_params": {op: p for op, p in op_params.items() if p}}

    def build(self, values: dict[str, Any]) -> RunConfig:
        """The run config of fixed base values plus sampled ones (dotted keys)."""
        cfg = config_from_dict(self.base_tree())
        return cfg.replace({**values, "train.epochs": values.get("train.epochs", self.epochs)})

    def base_tree(self) -> dict[str, Any]:
        return unflatten(self.base)

    def config_for(self, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
        """The run config of a trial from its Optuna params (``param_*`` of the trials table, or
        ``FrozenTrial.params``), so retraining and analysis rebuild a trial exactly as the search ran it;
        pass the experiment's ``overrides`` (search.json) to get its epoch budget and CLI settings too."""
        try:
            tree = self.define_by_run(optuna.trial.FixedTrial(params), overrides)["run_config"]
        except ValueError as err:  # FixedTrial: a param this space suggests is missing
            raise SpaceError(f"{self.path}: params do not match this space: {err}") from None
        return config_from_dict(tree)

    def grid(self) -> dict[str, list] | None:
        """The axes of a ``sampler: grid`` space (variant × categorical params), else None."""
        if self.sampler != "grid":
            return None
        grid = {"variant": list(self.variants)}
        grid.update({k: d.choices for k, d in self.params.items()})
        return grid

    def grid_cells(self, seed: int = 0) -> list[dict[str, Any]]:
        """Every cell of the grid once, as Optuna params to enqueue (in the file's order); for a
        ``sampler: design`` space every trial of the design (``design_cells``, shuffled by ``seed``)."""
        if self.sampler == "design":
            return self.design_cells(seed)
        axes = self.grid() or {}
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []

    def grid_size(self) -> int:
        return len(self.grid_cells())


def resolve_path(name: str | Path, folder: Path = SPACES_DIR) -> Path:
    """A bare file name is looked up in ``folder`` (``search_spaces/``, or its ``configs/``)."""
    path = Path(name)
    if not path.exists() and (folder / path).exists():
        return folder / path
    if not path.exists() and (folder / f"{path}.yaml").exists():
        return folder / f"{path}.yaml"
    return path


def load_space(name: str | Path) -> SearchSpace:
    path = resolve_path(name)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the search space ({err.strerror}); shipped spaces: "
                         f"{', '.join(sorted(p.name for p in SPACES_DIR.glob('*.yaml')))}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {err}") from None
    try:
        return _parse(path, raw, hashlib.sha1(text.encode()).hexdigest())
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None


def _when_order(params: dict[str, Dist]) -> dict[str, Dist]:
    """Params in an order where every ``when:`` key is sampled before the params it gates (the file's
    order otherwise), so a condition never depends on where a param is listed; cycles are rejected."""
    ordered: dict[str, Dist] = {}
    while len(ordered) < len(params):
        ready = [k for k, d in params.items()
                 if k not in ordered and (d.when is None or d.when not in params or d.when in ordered)]
        if not ready:
            cycle = sorted(k for k in params if k not in ordered)
            raise SpaceError(f"params.{cycle[0]}.when: the conditions of {', '.join(cycle)} form a cycle")
        ordered.update((k, params[k]) for k in ready[:1])
    return ordered


def _parse(path: Path, raw: Any, digest: str) -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError("expected a mapping at the top level")
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as err:
        raise SpaceError(first_error(err, SpaceFile)) from None
    base = flatten(spec.base, FREE_FORM)
    params = {k: to_dist(d) for k, d in spec.params.items()}
    for key in params:
        if key in base:
            raise SpaceError(f"params.{key}: also fixed in base; set it in one place")
        if key in VIEW_KEYS_OF_OPS:
            raise SpaceError(f"params.{key}: the ops block controls {key}; search ops there")
        if key == "train.epochs":
            raise SpaceError("params.train.epochs: the epoch budget is the top-level 'epochs' (ASHA's max_t)")
    for key, dist in params.items():
        if dist.when is not None and dist.when not in params and dist.when not in base:
            raise SpaceError(f"params.{key}.when: {dist.when!r} is neither searched nor in base")
    params = _when_order(params)

    ops, candidates = spec.ops, spec.ops.candidates
    if candidates and (VIEW_KEYS_OF_OPS & set(base)):
        raise SpaceError(f"base.{min(VIEW_KEYS_OF_OPS & set(base))}: set by the ops block; remove it from base")
    if isinstance(ops.use, dict) and set(ops.use) - set(candidates):
        raise SpaceError(f"ops.use.{min(set(ops.use) - set(candidates))}: not among ops.candidates")
    use: dict[str, Dist | bool] = {}
    for op in candidates:
        value = ops.use.get(op, "search") if isinstance(ops.use, dict) else ops.use
        use[op] = Dist("categorical", choices=[True, False]) if value == "search" else value is not False
    magnitudes: dict[str, dict[str, Dist]] = {}
    for op, dists in ops.magnitudes.items():
        if op not in candidates:
            raise SpaceError(f"ops.magnitudes.{op}: not among ops.candidates ({', '.join(candidates)})")
        magnitudes[op] = {p: to_dist(d) for p, d in dists.items()}
        for p, d in magnitudes[op].items():
            for value in d.examples():
                try:
                    validate_op_params(op, {p: value})
                except ValueError as err:
                    raise SpaceError(f"ops.magnitudes.{op}.{p}: {err}") from None

    variants = {str(k): flatten(v, FREE_FORM) for k, v in spec.variants.items()}
    for name, values in variants.items():
        clash = sorted(set(values) & (set(params) | ({"views.ops"} if candidates else set())))
        if clash:
            raise SpaceError(f"variants.{name}.{clash[0]}: also searched in params/ops; set it in one place")
    asha = spec.asha.model_dump() if spec.asha is not None else None
    if asha is not None and asha["grace_period"] > spec.epochs:
        raise SpaceError(f"asha.grace_period: {asha['grace_period']} is more than epochs ({spec.epochs}); "
                         f"ASHA needs grace_period <= the epoch budget")
    if "replicates" in raw and spec.sampler != "design":
        raise SpaceError("replicates: only a 'sampler: design' space has replicates")
    if spec.sampler == "grid" and (not variants or any(d.kind != "categorical" for d in params.values())
                                   or candidates):
        raise SpaceError("sampler: grid needs variants, categorical params only and no ops block")
    space = SearchSpace(path, base, params, candidates, use, magnitudes, ops.order, variants, spec.epochs, asha,
                        spec.trials.model_dump(exclude_none=True), spec.resources.model_dump(exclude_none=True),
                        spec.sampler, digest, spec.startup, spec.replicates)
    problem = space.design_problem()
    if problem:
        raise SpaceError(problem)
    _check_configs(space)
    return space


def _check_configs(space: SearchSpace) -> None:
    """Build configs at the corners of the space so that a value the run config rejects fails now."""
    try:
        space.build({})
        for key, dist in space.params.items():
            for value in dist.examples():
                space.build({key: value})
        for values in space.variants.values():
            space.build(values)
        if space.candidates:
            space.build({"views.ops": list(space.candidates)})
    except ConfigError as err:
        raise SpaceError(str(err)) from None
