"""One typed, validated run configuration with the paper's defaults.

Everything a run does is decided here: the single-run CLI, the search (each trial's sampled space
becomes one of these) and retraining all build a :class:`RunConfig` and nothing else. Validation is
strict so that a typo in a YAML file or a ``--set`` override fails before any work starts, naming
the key and the allowed values. The keys are pydantic models (``uclser_tune.validation`` says why);
op and encoder names are the keys of their registries (``views.ops.OPS``, ``models.ENCODERS``), so a
new op or encoder is valid here as soon as it is registered. ``python -m uclser_tune.train --schema``
prints the JSON schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from uclser_tune.dotted import NotASection, flatten, set_key
from uclser_tune.models import ENCODERS
from uclser_tune.validation import Bool, Float, Int, KeyedError, Schema, Str, first_error
from uclser_tune.views.ops import OPS, validate_op_params
from uclser_tune.views.pipeline import ORDERS as VIEW_ORDERS
from uclser_tune.views.sampling import SAMPLING_MODES

OP_NAMES = tuple(OPS)  # the augmentation ops' registry keys: the names configs, spaces and plots use
OpName = Literal[OP_NAMES]  # type: ignore[valid-type]  # the registry's keys as a type
EncoderName = Literal[tuple(ENCODERS)]  # type: ignore[valid-type]
FREE_FORM = ("views.op_params",)  # config keys whose value is a mapping keyed by data (op names)


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the key."""


def _f(default: Any, doc: str, **bounds: Any) -> Any:
    """A config key: its default (lists and mappings copied per config), its meaning and its bounds
    (``gt``/``ge``/``le``, pydantic's)."""
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda d=default: type(d)(d), description=doc, **bounds)
    return Field(default, description=doc, **bounds)


def _fractions(value: list[float]) -> list[float]:
    if any(not 0.0 < m < 1.0 for m in value) or value != sorted(value):
        raise ValueError(f"got {value}; expected increasing fractions in (0, 1)")
    return value


def _device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ValueError(f"got {value!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return value


def _each_op_once(ops: list[str]) -> list[str]:
    for i, op in enumerate(ops):
        if op in ops[:i]:
            raise KeyedError(f"[{i}]", f"op {op!r} appears twice; each op may appear once")
    return ops


OpList = Annotated[list[OpName], AfterValidator(_each_op_once)]  # registered ops, each at most once
Milestones = Annotated[list[Float], AfterValidator(_fractions)]
Device = Annotated[Str, AfterValidator(_device)]


class DataConfig(Schema):
    root: Str = _f("synthetic", "FSDnoisy18k-layout folder, or 'synthetic' for the embedded generated set")
    synth_size: Literal["tiny", "small", "full"] = _f("small", "size of the synthetic set when root is 'synthetic'")
    synth_seed: Int = _f(0, "seed of the synthetic generator")
    cache_dir: Str = _f("", "where generated data and feature stores live; '' = $UCLSER_CACHE or ~/.cache/uclser_tune")
    store_dtype: Literal["float32", "float16"] = _f("float32", "dtype of the log-mel frames in memory")


class ViewsConfig(Schema):
    sampling: Literal[SAMPLING_MODES] = _f(  # type: ignore[valid-type]
        "random", "how the two patches of a clip are placed")
    separation: Int = _f(0, "|s1 - s2| in frames for sampling='separation'", ge=0, le=10_000)
    patch_frames: Int = _f(101, "patch length in frames (≈1 s)", ge=8, le=10_000)
    mixback: Bool = _f(True, "mix each view with a patch of another clip, in linear power")
    mixback_alpha: Float = _f(0.05, "λ ~ U(0, α) per clip", ge=0.0, le=1.0)
    mixback_energy_adjust: Bool = _f(True, "scale the background to the foreground's energy first")
    ops: OpList = _f(["rrc", "compression", "noise"], "augmentation ops applied after mix-back, in this order")
    order: Literal[VIEW_ORDERS] = _f(  # type: ignore[valid-type]
        "fixed", "'fixed' uses ops in the listed order")
    op_params: dict[OpName, dict[Str, Any]] = _f({}, "per-op parameter overrides, e.g. {noise: {sigma_max: 0.02}}")

    @field_validator("op_params")
    @classmethod
    def _known_op_params(cls, op_params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each op checks its own parameters (the registry owns them); the overrides are kept as given."""
        for op, params in op_params.items():
            try:
                validate_op_params(op, params)
            except ValueError as err:
                raise KeyedError(op, str(err)) from None
        return op_params

    @model_validator(mode="after")
    def _separation_needs_a_distance(self) -> ViewsConfig:
        if self.sampling == "separation" and self.separation <= 0:  # d = 0 is the paper's 'same': one spelling
            raise KeyedError("separation", "must be > 0 with views.sampling='separation' (use sampling='same' for d=0)")
        return self


class ModelConfig(Schema):
    encoder: EncoderName = _f("resnet18", "encoder architecture")
    width: Float = _f(1.0, "channel width multiplier (small values for CPU smoke runs)", gt=0.0, le=8.0)
    proj_hidden: Int = _f(512, "projection head hidden size", ge=1, le=65_536)
    proj_dim: Int = _f(512, "projection head output size (z)", ge=1, le=65_536)


class TrainConfig(Schema):
    epochs: Int = _f(500, "pre-training epochs (one positive pair per pretrain clip per epoch)", ge=1, le=100_000)
    batch_size: Int = _f(128, "clips per batch (N; the loss sees 2N views)", ge=2, le=65_536)
    tau: Float = _f(0.2, "NT-Xent temperature", gt=0.0, le=10.0)
    lr: Float = _f(0.03, "SGD learning rate", gt=0.0, le=10.0)
    lr_scaling: Literal["none", "linear"] = _f(
        "none", "'none': lr as given (the paper); 'linear': lr × batch_size / 128, 128 being the paper's batch, so "
        "that a batch-size search keeps the lr per sample fixed")
    momentum: Float = _f(0.9, "SGD momentum", ge=0.0, le=1.0)
    weight_decay: Float = _f(1e-4, "SGD weight decay", ge=0.0, le=1.0)
    lr_milestones: Milestones = _f([0.65, 0.85], "lr × lr_gamma at these fractions of the epochs (325, 425 of 500)")
    lr_gamma: Float = _f(0.1, "lr decay factor at each milestone", gt=0.0, le=1.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "autocast dtype; 'auto': bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16, "
        "AMX), else fp32; 'bf16' on any device; 'fp16' on CUDA only (refused on a CPU). The one that ran is in "
        "each epoch's metrics and the checkpoint")
    channels_last: Literal["auto", "on", "off"] = _f(
        "auto", "channels_last memory layout; 'auto': on a CPU running bf16 for every encoder (faster there, "
        "results/benchmarks/README.md), on CUDA for the conv encoders, else off")
    device: Device = _f("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    num_threads: Int = _f(0, "torch CPU threads; 0 = all cores", ge=0, le=1024)
    max_batches_per_epoch: Int = _f(0, "cap on batches per epoch for smoke runs; 0 = a full pass", ge=0, le=10**9)


class EvalConfig(Schema):
    every: Int = _f(1, "kNN evaluation every this many epochs (and always at the last)", ge=1, le=100_000)
    knn_k: Int = _f(200, "neighbours in the kNN vote", ge=1, le=10**7)
    patch_hop: Int = _f(50, "hop between evaluation patches in frames", ge=1, le=10_000)
    batch_size: Int = _f(512, "patches per forward pass during evaluation", ge=1, le=10**6)


class DownstreamConfig(Schema):
    epochs: Int = _f(200, "epochs of linear evaluation and fine-tuning", ge=1, le=100_000)
    batch_size: Int = _f(128, "clips per batch", ge=1, le=65_536)
    linear_lr: Float = _f(0.1, "SGD lr for linear evaluation", gt=0.0, le=10.0)
    finetune_lr: Float = _f(0.01, "SGD lr for fine-tuning and the random-init baseline", gt=0.0, le=10.0)
    momentum: Float = _f(0.9, "SGD momentum", ge=0.0, le=1.0)
    weight_decay: Float = _f(1e-4, "SGD weight decay", ge=0.0, le=1.0)
    lr_milestones: Milestones = _f([0.4, 0.8], "lr × 0.1 at these fractions of the epochs (80, 160 of 200)")
    freeze_bn: Bool = _f(True, "linear evaluation keeps encoder BN in eval mode (the reference leaves it training)")
    clean_val_fraction: Float = _f(0.15, "share of train_clean held out in the small-clean task", gt=0.0, le=1.0)


class RunConfig(Schema):
    seed: Int = _f(0, "seeds every random stream of the run")
    data: DataConfig = Field(default_factory=DataConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)

    def validate(self) -> RunConfig:
        """Every value is checked when the config is built; kept for callers that chain it."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict[str, Any]) -> RunConfig:
        """A new validated config with dotted-key overrides, e.g. ``{"train.tau": 0.1}``."""
        merged = self.to_dict()
        for key, value in overrides.items():
            try:
                set_key(merged, key, value)
            except NotASection as err:
                raise ConfigError(str(err)) from None
        return config_from_dict(merged)


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and validate a :class:`RunConfig`; missing keys take the paper's defaults."""
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(first_error(err, RunConfig, "config")) from None


def _read_yaml(path: Path) -> Any:
    """A config file's YAML, loaded safely; unreadable or invalid files are a ConfigError naming the file."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config (safely) and apply ``key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        cfg = config_from_dict(data)
        return cfg.replace(parse_overrides(overrides or [])) if overrides else cfg
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The run-config values a YAML file sets (nested or dotted keys), as dotted keys: a partial run config
    fixed on top of another one, e.g. a search space's base. Checked as a run config, errors name the file."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of run-config keys, got {type(data).__name__}")
    flat = flatten(data, FREE_FORM)
    try:
        config_from_dict({}).replace(flat)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return flat


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


def describe_config() -> str:
    """Every key with its default and meaning (for ``--help`` texts and docs)."""
    lines = []

    def walk(cls: type[Schema], prefix: str) -> None:
        for name, f in cls.model_fields.items():
            if isinstance(f.annotation, type) and issubclass(f.annotation, Schema):
                walk(f.annotation, f"{prefix}{name}.")
            else:
                lines.append(f"  {prefix}{name} = {f.get_default(call_default_factory=True)!r}: {f.description}")

    walk(RunConfig, "")
    return "\n".join(lines)
