"""The schema of a search-space file (``search_spaces/README.md``): types, keys and ranges, as pydantic
models (``uclser_tune.validation``). Rules between sections (a key searched and fixed at once, ``when``
keys, what a grid or a design needs) are checked where the space is built, in ``spaces``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from uclser_tune.config import OpList
from uclser_tune.validation import Bool, Int, KeyedError, Number, Schema, Str

ORDERS = ("fixed", "lehmer", "random_keys", "random_per_sample")
SAMPLERS = ("tpe", "grid", "random", "design")
STARTUPS = ("design", "sampler")


def _empty_is_none(value: Any) -> Any:
    """A section written with nothing under it (``params:``) is an empty mapping."""
    return {} if value is None else value


Section = BeforeValidator(_empty_is_none)


class DistSpec(Schema):
    """``{float: [lo, hi], log: true}``, ``{int: [lo, hi]}`` or ``{categorical: [...]}``, each with an
    optional ``when: <dotted key of a true/false value>``."""

    float_: tuple[Number, Number] | None = Field(None, alias="float")
    int_: tuple[Int, Int] | None = Field(None, alias="int")
    categorical: list[Any] | None = None
    log: Bool = False
    when: Str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DistSpec:
        kinds = [k for k, v in (("float", self.float_), ("int", self.int_), ("categorical", self.categorical))
                 if v is not None]
        if len(kinds) != 1:
            raise ValueError(f"a distribution needs exactly one of float, int, categorical (and optionally log, "
                             f"when); got {', '.join(kinds) or 'none'}")
        if self.categorical is not None:
            value = self.categorical
            if not value:
                raise KeyedError("categorical", "needs a non-empty list of choices")
            if any(isinstance(v, (dict, list)) for v in value) or len({repr(v) for v in value}) != len(value):
                raise KeyedError("categorical", f"choices must be distinct scalars; got {value}")
            if "log" in self.model_fields_set:
                raise KeyedError("log", "applies to float and int ranges only")
            return self
        low, high = self.float_ or self.int_
        if not low < high:
            raise ValueError(f"bad range [{low}, {high}]: low must be < high")
        if self.log and low <= 0:
            raise KeyedError("log", f"a log range needs low > 0; got [{low}, {high}]")
        return self

    @property
    def kind(self) -> str:
        return "float" if self.float_ is not None else "int" if self.int_ is not None else "categorical"


class OpsSpec(Schema):
    candidates: OpList = Field(default_factory=list)
    use: Any = Field("search", description="'search' (a use_<op> switch each), 'all', or op → true/false/search")
    magnitudes: Annotated[dict[Str, Annotated[dict[Str, DistSpec], Section]], Section] = Field(default_factory=dict)
    order: Literal[ORDERS] = "fixed"  # type: ignore[valid-type]

    @field_validator("use")
    @classmethod
    def _use(cls, use: Any) -> Any:
        values = use.values() if isinstance(use, dict) else [use]
        if any(v not in ("search", "all", True, False) or (isinstance(use, dict) and v == "all") for v in values):
            raise ValueError(f"expected 'search', 'all' or a mapping op → true/false/search; got {use!r}")
        return use


class AshaSpec(Schema):
    grace_period: Int = Field(1, gt=0)
    reduction_factor: Number = Field(3, gt=1)


class TrialsSpec(Schema):
    num_samples: Int = Field(32, gt=0)
    max_concurrent: Int | None = Field(None, gt=0)


class ResourcesSpec(Schema):
    cpu: Number = Field(1, gt=0)
    gpu: Number | None = Field(None, gt=0)


class SpaceFile(Schema):
    description: Str = ""
    base: Annotated[dict[Str, Any], Section] = Field(default_factory=dict)
    params: Annotated[dict[Str, DistSpec], Section] = Field(default_factory=dict)
    ops: Annotated[OpsSpec, Section] = Field(default_factory=OpsSpec)
    variants: Annotated[dict[Any, Annotated[dict[Str, Any], Section]], Section] = Field(default_factory=dict)
    epochs: Int = Field(100, ge=1)
    asha: AshaSpec | None = Field(default_factory=AshaSpec)
    trials: Annotated[TrialsSpec, Section] = Field(default_factory=TrialsSpec)
    resources: Annotated[ResourcesSpec, Section] = Field(default_factory=ResourcesSpec)
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    startup: Literal[STARTUPS] = "design"  # type: ignore[valid-type]
    replicates: Int = Field(1, ge=1)
