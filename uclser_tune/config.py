"""One typed, validated run configuration with the paper's defaults.

Everything a run does is decided here: the single-run CLI, the search (each trial's sampled space
becomes one of these) and retraining all build a :class:`RunConfig` and nothing else. Validation is
strict so that a typo in a YAML file or a ``--set`` override fails before any work starts, naming
the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

OP_NAMES = ("rrc", "compression", "noise", "specaugment", "time_shift", "freq_shift", "time_reversal", "blur")
ENCODER_NAMES = ("resnet18", "vgg_like", "crnn")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the key."""


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


def _f(default: Any, doc: str, **rng: Any) -> Any:
    meta = {"doc": doc, **rng}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    root: str = _f("synthetic", "FSDnoisy18k-layout folder, or 'synthetic' for the embedded generated set")
    synth_size: Literal["tiny", "small", "full"] = _f("small", "size of the synthetic set when root is 'synthetic'")
    synth_seed: int = _f(0, "seed of the synthetic generator")
    cache_dir: str = _f("", "where generated data and feature stores live; '' = $UCLSER_CACHE or ~/.cache/uclser_tune")
    store_dtype: Literal["float32", "float16"] = _f("float32", "dtype of the log-mel frames in memory")


@dataclass
class ViewsConfig:
    sampling: Literal["random", "same", "separation"] = _f("random", "how the two patches of a clip are placed")
    separation: int = _f(0, "|s1 - s2| in frames for sampling='separation'", **_range(0, 10_000))
    patch_frames: int = _f(101, "patch length in frames (≈1 s)", **_range(8, 10_000))
    mixback: bool = _f(True, "mix each view with a patch of another clip, in linear power")
    mixback_alpha: float = _f(0.05, "λ ~ U(0, α) per clip", **_range(0.0, 1.0))
    mixback_energy_adjust: bool = _f(True, "scale the background to the foreground's energy first")
    ops: list[str] = _f(["rrc", "compression", "noise"], "augmentation ops applied after mix-back, in this order")
    order: Literal["fixed", "random_per_sample"] = _f("fixed", "'fixed' uses ops in the listed order")
    op_params: dict[str, dict[str, Any]] = _f({}, "per-op parameter overrides, e.g. {noise: {sigma_max: 0.02}}")


@dataclass
class ModelConfig:
    encoder: Literal["resnet18", "vgg_like", "crnn"] = _f("resnet18", "encoder architecture")
    width: float = _f(1.0, "channel width multiplier (small values for CPU smoke runs)", **_range(0.0, 8.0, lo_open=True))
    proj_hidden: int = _f(512, "projection head hidden size", **_range(1, 65_536))
    proj_dim: int = _f(512, "projection head output size (z)", **_range(1, 65_536))


@dataclass
class TrainConfig:
    epochs: int = _f(500, "pre-training epochs (one positive pair per pretrain clip per epoch)", **_range(1, 100_000))
    batch_size: int = _f(128, "clips per batch (N; the loss sees 2N views)", **_range(2, 65_536))
    tau: float = _f(0.2, "NT-Xent temperature", **_range(0.0, 10.0, lo_open=True))
    lr: float = _f(0.03, "SGD learning rate", **_range(0.0, 10.0, lo_open=True))
    lr_scaling: Literal["none", "linear"] = _f(
        "none", "'none': lr as given (the paper); 'linear': lr × batch_size / 128, 128 being the paper's batch, so "
        "that a batch-size search keeps the lr per sample fixed")
    momentum: float = _f(0.9, "SGD momentum", **_range(0.0, 1.0))
    weight_decay: float = _f(1e-4, "SGD weight decay", **_range(0.0, 1.0))
    lr_milestones: list[float] = _f([0.65, 0.85], "lr × lr_gamma at these fractions of the epochs (325, 425 of 500)")
    lr_gamma: float = _f(0.1, "lr decay factor at each milestone", **_range(0.0, 1.0, lo_open=True))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "autocast dtype; 'auto': bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16, "
        "AMX), else fp32; 'bf16' on any device; 'fp16' on CUDA only (refused on a CPU). The one that ran is in "
        "each epoch's metrics and the checkpoint")
    channels_last: Literal["auto", "on", "off"] = _f(
        "auto", "channels_last memory layout; 'auto': on a CPU running bf16 for every encoder (faster there, "
        "results/benchmarks/README.md), on CUDA for the conv encoders, else off")
    device: str = _f("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    num_threads: int = _f(0, "torch CPU threads; 0 = all cores", **_range(0, 1024))
    max_batches_per_epoch: int = _f(0, "cap on batches per epoch for smoke runs; 0 = a full pass", **_range(0, 10**9))


@dataclass
class EvalConfig:
    every: int = _f(1, "kNN evaluation every this many epochs (and always at the last)", **_range(1, 100_000))
    knn_k: int = _f(200, "neighbours in the kNN vote", **_range(1, 10**7))
    patch_hop: int = _f(50, "hop between evaluation patches in frames", **_range(1, 10_000))
    batch_size: int = _f(512, "patches per forward pass during evaluation", **_range(1, 10**6))


@dataclass
class DownstreamConfig:
    epochs: int = _f(200, "epochs of linear evaluation and fine-tuning", **_range(1, 100_000))
    batch_size: int = _f(128, "clips per batch", **_range(1, 65_536))
    linear_lr: float = _f(0.1, "SGD lr for linear evaluation", **_range(0.0, 10.0, lo_open=True))
    finetune_lr: float = _f(0.01, "SGD lr for fine-tuning and the random-init baseline", **_range(0.0, 10.0, lo_open=True))
    momentum: float = _f(0.9, "SGD momentum", **_range(0.0, 1.0))
    weight_decay: float = _f(1e-4, "SGD weight decay", **_range(0.0, 1.0))
    lr_milestones: list[float] = _f([0.4, 0.8], "lr × 0.1 at these fractions of the epochs (80, 160 of 200)")
    freeze_bn: bool = _f(True, "linear evaluation keeps encoder BN in eval mode (the reference leaves it training)")
    clean_val_fraction: float = _f(0.15, "share of train_clean held out in the small-clean task", **_range(0.0, 1.0, lo_open=True))


@dataclass
class RunConfig:
    seed: int = _f(0, "seeds every random stream of the run")
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)

    def validate(self) -> RunConfig:
        _check_cross(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict[str, Any]) -> RunConfig:
        """A new validated config with dotted-key overrides, e.g. ``{"train.tau": 0.1}``."""
        merged = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(merged, key, value)
        return config_from_dict(merged)


# ----------------------------------------------------------------------------- building and checking


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: got {value!r}; expected {_describe(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", item, v, {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise bad
    elif tp is str and not isinstance(value, str):
        raise bad
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: got {value!r}; must be {op} {lo}" + (f" and <= {hi}" if hi is not None else ""))
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: got {value!r}; must be <= {hi}")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]}; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(key, tp, value, dict(fields[name].metadata))
    return cls(**kwargs)


def _check_cross(cfg: RunConfig) -> None:
    v = cfg.views
    seen = set()
    for i, op in enumerate(v.ops):
        if op not in OP_NAMES:
            raise ConfigError(f"views.ops[{i}]: unknown op {op!r}; allowed: {', '.join(OP_NAMES)}")
        if op in seen:
            raise ConfigError(f"views.ops[{i}]: op {op!r} appears twice; each op may appear once")
        seen.add(op)
    for op, params in v.op_params.items():
        if op not in OP_NAMES:
            raise ConfigError(f"views.op_params.{op}: unknown op; allowed: {', '.join(OP_NAMES)}")
        if not isinstance(params, dict):
            raise ConfigError(f"views.op_params.{op}: expected a mapping of parameters")
        from uclser_tune.views.ops import validate_op_params  # late: the op registry owns its parameters

        try:
            validate_op_params(op, params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"views.op_params.{op}: {err}") from None
    for name in ("train", "downstream"):
        ms = getattr(cfg, name).lr_milestones
        if any(not 0.0 < m < 1.0 for m in ms) or ms != sorted(ms):
            raise ConfigError(f"{name}.lr_milestones: got {ms}; expected increasing fractions in (0, 1)")
    if v.sampling == "separation" and v.separation <= 0:
        # d = 0 is the paper's 'same'; keep one spelling for it
        raise ConfigError("views.separation: must be > 0 with views.sampling='separation' (use sampling='same' for d=0)")
    dev = cfg.train.device
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"train.device: got {dev!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and validate a :class:`RunConfig`; missing keys take the paper's defaults."""
    return _build(RunConfig, data or {}, "").validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config (safely) and apply ``key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        cfg = config_from_dict(data)
        return cfg.replace(parse_overrides(overrides or [])) if overrides else cfg
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.tau=0.1", "views.ops=[rrc, noise]"]`` → ``{"train.tau": 0.1, ...}``."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            reason = " ".join(str(getattr(err, "problem", "") or err).split())
            raise ConfigError(f"override {item!r}: {key.strip()}: the value is not valid YAML ({reason}); quote "
                              f"lists in the shell, e.g. {key.strip()}='[a, b]'") from None
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict; below ``views.op_params`` keys are free-form (the op validates)."""
    node = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        free = parts[:2] == ["views", "op_params"] and i >= 2
        if part not in node and not free:
            where = ".".join(parts[:i]) or "config"
            raise ConfigError(f"unknown key {'.'.join(parts[: i + 1])}; allowed keys under {where}: {', '.join(node)}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section; cannot set {key}")


def describe_config() -> str:
    """Every key with its default and meaning (for ``--help`` texts and docs)."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                lines.append(f"  {key} = {default!r}: {f.metadata.get('doc', '')}")

    walk(RunConfig, "")
    return "\n".join(lines)
