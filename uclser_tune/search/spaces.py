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

from uclser_tune.config import OP_NAMES, ConfigError, RunConfig, config_from_dict
from uclser_tune.search.design import (  # noqa: F401  (hadamard, fractional_factorial: the design's API here too)
    ENUMERATED,
    DesignSampler,
    fractional_factorial,
    hadamard,
    lehmer_decode,
    lehmer_encode,
)
from uclser_tune.views.ops import validate_op_params

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
TOP_KEYS = {"description", "base", "params", "ops", "variants", "epochs", "asha", "trials", "resources", "sampler",
            "startup", "replicates"}
ORDERS = ("fixed", "lehmer", "random_keys", "random_per_sample")
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


def parse_dist(spec: Any, where: str) -> Dist:
    """``{float: [lo, hi], log: true}``, ``{int: [lo, hi]}`` or ``{categorical: [...]}`` (+ ``when: key``)."""
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected a distribution like {{float: [lo, hi]}}, {{int: [lo, hi]}} or "
                         f"{{categorical: [a, b]}}; got {spec!r}")
    kinds = [k for k in ("float", "int", "categorical") if k in spec]
    extra = sorted(set(spec) - {"float", "int", "categorical", "log", "when"})
    if len(kinds) != 1 or extra:
        raise SpaceError(f"{where}: a distribution needs exactly one of float, int, categorical (and optionally "
                         f"log, when); got keys {sorted(spec)}")
    kind, value, when = kinds[0], spec[kinds[0]], spec.get("when")
    if when is not None and not isinstance(when, str):
        raise SpaceError(f"{where}.when: got {when!r}; expected the dotted name of a true/false key")
    if kind == "categorical":
        if not isinstance(value, list) or not value:
            raise SpaceError(f"{where}: categorical needs a non-empty list of choices")
        if any(isinstance(v, (dict, list)) for v in value) or len({repr(v) for v in value}) != len(value):
            raise SpaceError(f"{where}: categorical choices must be distinct scalars; got {value}")
        if "log" in spec:
            raise SpaceError(f"{where}: log applies to float and int ranges only")
        return Dist(kind, choices=value, when=when)
    numeric = (int,) if kind == "int" else (int, float)
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, numeric) for v in value)):
        raise SpaceError(f"{where}: {kind} needs [low, high] with {kind} values; got {value!r}")
    low, high = value
    if not low < high:
        raise SpaceError(f"{where}: bad range [{low}, {high}]: low must be < high")
    log = spec.get("log", False)
    if not isinstance(log, bool) or (log and low <= 0):
        raise SpaceError(f"{where}: log must be true/false and needs low > 0")
    return Dist(kind, low, high, log, when=when)


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
        tree: dict[str, Any] = {}
        for key, value in self.base.items():
            node = tree
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return tree

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


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → dotted keys; ``views.op_params`` stays one value (its keys are op names)."""
    if not isinstance(tree, dict) or prefix.endswith("op_params"):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def resolve_path(name: str | Path) -> Path:
    """A bare file name is looked up in ``search_spaces/``."""
    path = Path(name)
    if not path.exists() and (SPACES_DIR / path).exists():
        return SPACES_DIR / path
    if not path.exists() and (SPACES_DIR / f"{path}.yaml").exists():
        return SPACES_DIR / f"{path}.yaml"
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


def _numbers(section: Any, name: str, allowed: dict[str, tuple[Any, type, float]]) -> dict[str, Any]:
    """A mapping of positive numbers: ``allowed`` maps key → (default or None, int/float, exclusive lower
    bound), e.g. ASHA's reduction factor must exceed 1 and a trial count must be a whole number."""
    if not isinstance(section, dict):
        raise SpaceError(f"{name}: expected a mapping with keys {', '.join(allowed)}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise SpaceError(f"{name}.{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")
    out = {k: default for k, (default, _, _) in allowed.items() if default is not None}
    for k, v in section.items():
        _, kind, above = allowed[k]
        numeric = (int,) if kind is int else (int, float)
        if isinstance(v, bool) or not isinstance(v, numeric) or not v > above:
            what = "an integer" if kind is int else "a number"
            raise SpaceError(f"{name}.{k}: got {v!r}; expected {what} > {above:g}")
        out[k] = v
    return out


def _mapping(section: dict[str, Any], key: str, what: str, prefix: str = "") -> dict[str, Any]:
    """``section[key]`` as a mapping (empty when absent); a list or a scalar there is an error naming the key."""
    value = section.get(key) or {}
    if not isinstance(value, dict):
        raise SpaceError(f"{prefix}{key}: expected a mapping {what}; got {type(value).__name__} {value!r}")
    return value


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
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"unknown key {unknown[0]!r}; allowed top-level keys: {', '.join(sorted(TOP_KEYS))}")
    base = _flatten(_mapping(raw, "base", "dotted or nested config keys → values"))
    params = {k: parse_dist(v, f"params.{k}") for k, v in _mapping(raw, "params", "key → distribution").items()}
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

    ops = raw.get("ops") or {}
    if not isinstance(ops, dict):
        raise SpaceError("ops: expected a mapping with candidates, use, magnitudes, order")
    bad = sorted(set(ops) - {"candidates", "use", "magnitudes", "order"})
    if bad:
        raise SpaceError(f"ops.{bad[0]}: unknown key; allowed: candidates, use, magnitudes, order")
    candidates = ops.get("candidates", [])
    if not isinstance(candidates, list):
        raise SpaceError("ops.candidates: expected a list of op names")
    for i, op in enumerate(candidates):
        if op not in OP_NAMES:
            raise SpaceError(f"ops.candidates[{i}]: unknown op {op!r}; allowed: {', '.join(OP_NAMES)}")
        if op in candidates[:i]:
            raise SpaceError(f"ops.candidates[{i}]: op {op!r} appears twice in the order")
    if candidates and (VIEW_KEYS_OF_OPS & set(base)):
        raise SpaceError(f"base.{min(VIEW_KEYS_OF_OPS & set(base))}: set by the ops block; remove it from base")
    use_raw = ops.get("use", "search")
    if isinstance(use_raw, dict) and set(use_raw) - set(candidates):
        raise SpaceError(f"ops.use.{min(set(use_raw) - set(candidates))}: not among ops.candidates")
    use: dict[str, Dist | bool] = {}
    for op in candidates:
        value = use_raw.get(op, "search") if isinstance(use_raw, dict) else use_raw
        if value == "search":
            use[op] = Dist("categorical", choices=[True, False])
        elif value == "all" or isinstance(value, bool):
            use[op] = value is not False
        else:
            raise SpaceError(f"ops.use: expected 'search', 'all' or a mapping op → true/false/search; got {use_raw!r}")
    magnitudes: dict[str, dict[str, Dist]] = {}
    for op, spec in _mapping(ops, "magnitudes", "op → {parameter: distribution}", "ops.").items():
        if op not in candidates:
            raise SpaceError(f"ops.magnitudes.{op}: not among ops.candidates ({', '.join(candidates)})")
        if not isinstance(spec, dict):
            raise SpaceError(f"ops.magnitudes.{op}: expected a mapping parameter → distribution")
        magnitudes[op] = {p: parse_dist(d, f"ops.magnitudes.{op}.{p}") for p, d in spec.items()}
        for p, d in magnitudes[op].items():
            for value in d.examples():
                try:
                    validate_op_params(op, {p: value})
                except ValueError as err:
                    raise SpaceError(f"ops.magnitudes.{op}.{p}: {err}") from None
    order = ops.get("order", "fixed")
    if order not in ORDERS:
        raise SpaceError(f"ops.order: got {order!r}; allowed: {', '.join(ORDERS)}")

    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or any(not isinstance(v, dict) for v in variants.values()):
        raise SpaceError("variants: expected a mapping name → {dotted key: value}")
    variants = {str(k): _flatten(v) for k, v in variants.items()}
    for name, values in variants.items():
        clash = sorted(set(values) & (set(params) | ({"views.ops"} if candidates else set())))
        if clash:
            raise SpaceError(f"variants.{name}.{clash[0]}: also searched in params/ops; set it in one place")

    epochs = raw.get("epochs", 100)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise SpaceError(f"epochs: got {epochs!r}; expected a positive integer")
    asha = raw.get("asha", {})
    if asha is not None:
        asha = _numbers(asha, "asha", {"grace_period": (1, int, 0), "reduction_factor": (3, float, 1)})
        if asha["grace_period"] > epochs:
            raise SpaceError(f"asha.grace_period: {asha['grace_period']} is more than epochs ({epochs}); "
                             f"ASHA needs grace_period <= the epoch budget")
    trials = _numbers(raw.get("trials", {}), "trials", {"num_samples": (32, int, 0), "max_concurrent": (None, int, 0)})
    resources = _numbers(raw.get("resources", {}), "resources", {"cpu": (1, float, 0), "gpu": (None, float, 0)})
    sampler = raw.get("sampler", "tpe")
    if sampler not in ("tpe", "grid", "random", "design"):
        raise SpaceError(f"sampler: got {sampler!r}; allowed: tpe, grid, random, design")
    replicates = raw.get("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise SpaceError(f"replicates: got {replicates!r}; expected an integer >= 1")
    if "replicates" in raw and sampler != "design":
        raise SpaceError("replicates: only a 'sampler: design' space has replicates")
    if sampler == "grid" and (not variants or any(d.kind != "categorical" for d in params.values()) or candidates):
        raise SpaceError("sampler: grid needs variants, categorical params only and no ops block")
    startup = raw.get("startup", "design")
    if startup not in ("design", "sampler"):
        raise SpaceError(f"startup: got {startup!r}; allowed: design, sampler")
    space = SearchSpace(path, base, params, candidates, use, magnitudes, order, variants, epochs, asha, trials,
                        resources, sampler, digest, startup, replicates)
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
