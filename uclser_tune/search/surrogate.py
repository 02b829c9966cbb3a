"""A planted-truth objective: a trial's score computed from its run config instead of training.

``python -m uclser_tune.search --space S.yaml --surrogate TRUTH.yaml`` runs the same driver, Optuna
study, ASHA, results table and resume as a real search, but every epoch reports the score the TRUTH
file plants for the trial's config. The analysis can then be checked against effects whose sizes are
known. Schema (documented in ``search_spaces/README.md``)::

    base: 0.5          # final score before effects
    noise_sd: 0.01     # N(0, noise_sd) added to the final score, seeded by the trial's seed and config
    effects:           # each adds `add` to the final score when its condition holds
      - {when: {views.mixback: true}, add: 0.12}        # a run-config key (dotted) equal to a value
      - {when: {op: specaugment}, add: 0.05}            # the op is in views.ops
      - {when: {before: [rrc, compression]}, add: 0.03}  # both on, rrc applied earlier
      - {peak: {key: train.tau, log10_at: -0.7, width: 0.5}, add: 0.08}  # add·exp(-((log10 v - at)/width)^2)

A ``when`` with several entries holds when all of them hold. A key below ``views.op_params`` (e.g.
``views.op_params.noise.sigma_max``) is absent unless the run sets it; an absent key never matches and
gives no peak. The score at epoch e of E is ``final · curve(e/E)`` with
``curve(x) = (1 - exp(-3x)) / (1 - exp(-3))``: rising monotonically from 0 to 1, so every trial sees
the same curve and ASHA's rung comparisons rank trials as their final scores do.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from uclser_tune.config import FREE_FORM, OP_NAMES, RunConfig, config_from_dict
from uclser_tune.dotted import MISSING, flatten, get_key
from uclser_tune.search.spaces import Dist, SearchSpace
from uclser_tune.validation import Float, KeyedError, Schema, Str, ValidationError, first_error

CURVE_RATE = 3.0  # curve(x) = (1 - exp(-rate·x)) / (1 - exp(-rate)): 95 % of the final score at x = 1
PEAK_GRID = 51  # points between the centres of peaks sharing a key where best_achievable looks
OP_PARAMS = "views.op_params."


class TruthError(ValueError):
    """A malformed TRUTH file; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class Effect:
    add: float
    when: dict[str, Any] | None = None  # condition key → value ("op": name, "before": [a, b], dotted key)
    peak: dict[str, Any] | None = None  # key, log10_at, width


@dataclass(frozen=True)
class Truth:
    path: Path
    base: float
    noise_sd: float
    effects: tuple[Effect, ...]
    digest: str  # sha256 of the file: a resumed search must use the same truth


@functools.cache
def _config_keys() -> dict[str, Any]:
    """Every dotted leaf key of the run config → its default value."""
    return flatten(RunConfig().to_dict(), FREE_FORM)


def _unknown_op(values: list[Any]) -> str | None:
    """The message for the first of ``values`` that is no registered op, else None."""
    bad = [v for v in values if v not in OP_NAMES]
    return f"unknown op {bad[0]!r}; ops: {', '.join(OP_NAMES)}" if bad else None


def _key(key: Any) -> str:
    """A run-config key: a leaf of the config, or views.op_params.<op>.<param>."""
    if isinstance(key, str) and key.startswith(OP_PARAMS):
        parts = key.removeprefix(OP_PARAMS).split(".")
        if len(parts) != 2:
            raise ValueError(f"{key}: expected views.op_params.<op>.<param>")
        if problem := _unknown_op(parts[:1]):
            raise ValueError(f"{key}: {problem}")
        return key
    if key not in _config_keys():
        raise ValueError(f"unknown key {key!r} (not a run-config key, 'op' or 'before')")
    return key


class Peak(Schema):
    key: Str
    log10_at: Float
    width: Float = Field(gt=0)

    @field_validator("key")
    @classmethod
    def _numeric_key(cls, key: str) -> str:
        _key(key)
        if type(_config_keys().get(key, 1.0)) not in (int, float):  # bool is no number here
            raise ValueError(f"{key} is not a numeric run-config key")
        return key


class EffectSpec(Schema):
    add: Float
    when: dict[Str, Any] | None = None
    peak: Peak | None = None

    @field_validator("when")
    @classmethod
    def _conditions(cls, when: dict[str, Any]) -> dict[str, Any]:
        if not when:
            raise ValueError("expected a non-empty mapping")
        for key, value in when.items():
            if key == "before" and (not isinstance(value, list) or len(value) != 2 or value[0] == value[1]):
                raise KeyedError("before", f"expected two different ops [first, second]; got {value!r}")
            if key in ("op", "before"):
                if problem := _unknown_op(value if key == "before" else [value]):
                    raise KeyedError(key, problem)
            else:
                _key(key)
        return when

    @model_validator(mode="after")
    def _when_or_peak(self) -> EffectSpec:
        if (self.when is None) == (self.peak is None):
            raise ValueError("expected {when: {...}, add: x} or {peak: {...}, add: x}")
        return self


class TruthFile(Schema):
    base: Float
    noise_sd: Float = Field(0.0, ge=0)
    effects: list[EffectSpec]


def load_truth(path: str | Path) -> Truth:
    """Read and check a TRUTH file; TruthError names the file, the entry and the bad key or op."""
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"{path}: no such TRUTH file")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TruthError(f"{path}: not valid YAML: {err}") from None
    try:
        spec = TruthFile.model_validate(raw)
    except ValidationError as err:
        raise TruthError(f"{path}: {first_error(err, TruthFile, 'the file')}") from None
    effects = tuple(Effect(e.add, when=e.when, peak=e.peak.model_dump() if e.peak else None) for e in spec.effects)
    return Truth(path, spec.base, spec.noise_sd, effects, hashlib.sha256(text.encode()).hexdigest())


def _holds(when: dict[str, Any], tree: dict[str, Any]) -> bool:
    ops = tree["views"]["ops"]
    for key, value in when.items():
        if key == "op":
            held = value in ops
        elif key == "before":
            held = value[0] in ops and value[1] in ops and ops.index(value[0]) < ops.index(value[1])
        else:
            actual = get_key(tree, key)
            held = actual is not MISSING and actual == value
        if not held:
            return False
    return True


def contributions(truth: Truth, config: RunConfig) -> list[float]:
    """What each effect adds to the final score of ``config`` (0 where its condition does not hold)."""
    tree = config.to_dict()
    out = []
    for e in truth.effects:
        if e.when is not None:
            out.append(e.add if _holds(e.when, tree) else 0.0)
            continue
        v = get_key(tree, e.peak["key"])
        ok = v is not MISSING and isinstance(v, (int, float)) and v > 0
        out.append(e.add * math.exp(-((math.log10(v) - e.peak["log10_at"]) / e.peak["width"]) ** 2) if ok else 0.0)
    return out


def noiseless(truth: Truth, config: RunConfig) -> float:
    """The final score without noise: base plus every effect's contribution."""
    return truth.base + sum(contributions(truth, config))


def curve(epoch: int, epochs: int) -> float:
    """Share of the final score reached at ``epoch`` of ``epochs``: 0 at 0, 1 at the last, rising."""
    return (1 - math.exp(-CURVE_RATE * epoch / epochs)) / (1 - math.exp(-CURVE_RATE))


def score(truth: Truth, config: RunConfig, epoch: int, epochs: int, seed: int) -> float:
    """The score a trial reports at ``epoch``: ``curve(epoch/epochs) · (noiseless + noise)``. The noise is
    drawn from a generator seeded by ``seed`` and the config's text (hashlib, not Python's salted hash),
    so a resumed or repeated trial reports exactly the same numbers."""
    digest = hashlib.sha256(f"{seed}\n{config.to_yaml()}".encode()).digest()
    noise = np.random.default_rng(int.from_bytes(digest[:8], "little")).normal(0.0, truth.noise_sd)
    return curve(epoch, epochs) * (noiseless(truth, config) + float(noise))


# ----------------------------------------------------------------------------- best achievable score

class _Scripted:
    """Stands in for an Optuna trial in ``SearchSpace.define_by_run``: each suggestion comes from
    ``choice`` or, for a parameter the truth does not depend on, the distribution's first value."""

    number = -1

    def __init__(self, choice: dict[str, Any]) -> None:
        self.choice = choice

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return self.choice.get(name, choices[0])

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.choice.get(name, low)

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return self.choice.get(name, low)


def _candidates(dist: Dist, key: str, truth: Truth) -> list:
    """Values of a searched range where the truth can be largest: its ends, the ``when`` values inside
    it, each peak's centre clipped to it (a lone peak is unimodal in log v, so that is its maximum),
    and, when several peaks share the key, a grid of PEAK_GRID points between their centres."""
    if dist.kind == "categorical":
        return list(dist.choices)
    clip = functools.partial(np.clip, a_min=dist.low, a_max=dist.high)
    values = {dist.low, dist.high}
    values |= {e.when[key] for e in truth.effects if e.when and key in e.when
               and isinstance(e.when[key], (int, float)) and dist.low <= e.when[key] <= dist.high}
    centres = sorted(float(clip(10 ** e.peak["log10_at"])) for e in truth.effects if e.peak and e.peak["key"] == key)
    values |= set(centres)
    if len(centres) > 1 and centres[0] < centres[-1]:
        values |= {float(v) for v in np.geomspace(centres[0], centres[-1], PEAK_GRID)}
    if dist.kind == "int":
        return sorted({int(clip(f(v))) for v in values for f in (math.floor, math.ceil)})
    return sorted(values)


def _order_choices(space: SearchSpace, truth: Truth) -> list[dict[str, Any]]:
    """Order parameters giving every relative order of the ops named in ``before`` conditions."""
    named = list(dict.fromkeys(op for e in truth.effects if e.when and "before" in e.when
                               for op in e.when["before"] if op in space.candidates))
    if len(named) < 2 or space.order not in ("lehmer", "random_keys"):
        return [{}]
    return [space.order_params(list(perm) + [op for op in space.candidates if op not in named])
            for perm in itertools.permutations(named)]


def best_achievable(truth: Truth, space: SearchSpace, overrides: dict[str, Any] | None = None
                    ) -> tuple[float, RunConfig]:
    """The highest noiseless final score any trial of ``space`` can get, and a config that gets it.

    Only what the truth depends on is enumerated: variants, the searched keys it names, ``use_<op>``
    of the ops it names, magnitudes it names, and the relative order of ops in its ``before``
    conditions; everything else stays at one value. Exact unless several peaks share a key (then to a
    grid of PEAK_GRID points between their centres). For regret curves of a search (best found vs this)."""
    named_keys = {k for e in truth.effects if e.when for k in e.when} | {
        e.peak["key"] for e in truth.effects if e.peak}
    named_ops = {e.when["op"] for e in truth.effects if e.when and "op" in e.when} | {
        op for e in truth.effects if e.when and "before" in e.when for op in e.when["before"]}
    axes: dict[str, list] = {}
    if space.variants:
        axes["variant"] = list(space.variants)
    for key, dist in space.params.items():
        if key in named_keys:
            axes[key] = _candidates(dist, key, truth)
    for op in space.candidates:
        if isinstance(space.use[op], Dist) and op in named_ops:
            axes[f"use_{op}"] = [True, False]
        for param, dist in space.magnitudes.get(op, {}).items():
            if f"{OP_PARAMS}{op}.{param}" in named_keys:
                axes[f"{op}_{param}"] = _candidates(dist, f"{OP_PARAMS}{op}.{param}", truth)
    best: tuple[float, RunConfig] | None = None
    for values in itertools.product(*axes.values()):
        for order in _order_choices(space, truth):
            tree = space.define_by_run(_Scripted({**dict(zip(axes, values)), **order}), overrides)["run_config"]
            cfg = config_from_dict(tree)
            value = noiseless(truth, cfg)
            if best is None or value > best[0]:
                best = (value, cfg)
    assert best is not None  # the product of no axes still has one element
    return best
