"""One way to check user input: pydantic models, and one error line that names the key.

The run config, the search-space files, the planted-truth files and the augmentation ops' parameters
are all declared as pydantic models (pydantic 2, which Ray already needs). Chosen over hand-written
checks because one declaration per key gives its type, default, range and meaning together: the
checks, ``describe_config`` and a JSON schema (``python -m uclser_tune.train --schema``) all come
from it, and every error arrives with its exact location (``views.ops[1]``, ``params.train.tau.when``)
and the offending value, so the messages name the key without code per key. marshmallow or
jsonschema would need the types declared a second time next to the dataclasses; attrs validators
have no error locations for nested data.

Scalars are strict, as YAML users expect: ``true`` is not 1, ``"0.1"`` is not a number, NaN and
infinities are refused; an integer key accepts a whole float (``2.0``), a float key an integer.
Cross-key rules are validators that raise ``KeyedError`` to point at the key they are about.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    WrapValidator,
)

__all__ = ["Bool", "Float", "Int", "KeyedError", "Number", "Schema", "Str", "ValidationError", "first_error"]


def _whole(value: Any) -> Any:
    """A float that is a whole number as an int (``epochs: 2.0``); anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _keep_int(value: Any, handler: Any) -> Any:
    """Check as a float, but keep an int as written (``cpu: 2`` stays 2 in what the search records)."""
    checked = handler(value)
    return value if type(value) is int else checked


Int = Annotated[int, BeforeValidator(_whole), Strict()]
Float = Annotated[float, Strict()]  # strict: no bool, no string; an int becomes a float
Number = Annotated[float, Strict(), WrapValidator(_keep_int)]  # a Float that keeps ints as ints
Bool = StrictBool
Str = StrictStr


class Schema(BaseModel):
    """Base of every input model: unknown keys, NaN and infinities are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class KeyedError(ValueError):
    """Raised by a validator: ``key`` (``"separation"``, ``"[1]"``, ``"rrc.scale_min"``) is appended to
    the location being validated, so the error names the key the rule is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


_TYPES = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
          "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
          "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
          "model_attributes_type": "a mapping"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _join(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key itself is named already
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (through nested models, lists and mappings)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or isinstance(part, int):
            continue
        by_alias = {f.alias or name: f for name, f in fields.items()}
        field = by_alias.get(part)
        if field is None:  # a mapping key below a field (params.<key>): keep the field's value model
            continue
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ()) or ()):
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _bounds(model: type[BaseModel] | None, name: Any) -> str:
    """The whole allowed interval of a field, e.g. "[0.0, 10.0]" or "(0, 8.0]"; "" for one bound."""
    field = (model.model_fields.get(name) if model is not None else None)
    if field is None:
        return ""
    lo = hi = None
    for m in field.metadata:  # annotated_types.Gt/Ge/Lt/Le, as pydantic stores Field(gt=...) and so on
        for attr, bracket in (("gt", "("), ("ge", "[")):
            if getattr(m, attr, None) is not None:
                lo = (bracket, getattr(m, attr))
        for attr, bracket in (("lt", ")"), ("le", "]")):
            if getattr(m, attr, None) is not None:
                hi = (bracket, getattr(m, attr))
    return f"{lo[0]}{lo[1]}, {hi[1]}{hi[0]}" if lo and hi else ""


def describe(error: dict[str, Any], model: type[BaseModel], top: str = "top-level ") -> tuple[str | None, str]:
    """(location, reason) of one pydantic error dict, in this project's words; location "" is the whole
    input, None a top-level key that the reason names."""
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    got = f"got {_short(error.get('input'))}; "
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(f.alias or n for n, f in parent.model_fields.items()) if parent else ""
        where = f"allowed {top}keys" if len(loc) == 1 else "allowed keys"
        return (None if len(loc) == 1 else _join(loc),
                f"unknown key {loc[-1]!r}" + (f"; {where}: {allowed}" if allowed else ""))
    if kind in ("value_error", "assertion_error"):
        err = ctx.get("error")
        if isinstance(err, KeyedError):
            sub = err.key if err.key.startswith("[") or not loc else f".{err.key}"
            return _join(loc) + sub if loc else err.key, str(err)
        return _join(loc), str(err) if err is not None else error["msg"]
    if kind == "missing":
        if loc and isinstance(loc[-1], int):  # a short [low, high] pair
            return _join(loc[:-1]), f"got {loc[-1]} values; expected {loc[-1] + 1} or more"
        return _join(loc), "required key missing"
    if kind == "literal_error":
        return _join(loc), got + f"expected one of {ctx['expected']}"
    for key, word in _BOUNDS:
        if key in ctx and kind.startswith(("greater_than", "less_than")):
            interval = _bounds(_model_at(model, loc[:-1]), loc[-1] if loc else None)
            return _join(loc), got + f"must be {word} {ctx[key]}" + (f", allowed range {interval}" if interval else "")
    if kind in _TYPES:
        return _join(loc), got + f"expected {_TYPES[kind]}"
    if kind in ("too_short", "too_long"):
        return _join(loc), got + f"expected {ctx.get('min_length', ctx.get('max_length'))} values"
    return _join(loc), got + error["msg"]


def first_error(err: ValidationError, model: type[BaseModel], root: str = "", prefix: bool = False) -> str:
    """One line for the first error of ``err``: ``key: reason``. ``root`` names the whole input (``config``)
    where it is wrong as a whole (a list where a mapping belongs); with ``prefix`` every key is under it
    (``noise.sigma_max``)."""
    where, reason = describe(err.errors()[0], model, "" if prefix else "top-level ")
    if prefix:
        where = f"{root}.{where}" if where else root
    elif where == "":
        where = root
    return f"{where}: {reason}" if where else reason
