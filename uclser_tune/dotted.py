"""Dotted keys (``train.tau``, ``views.op_params.noise.sigma_max``) over nested mappings.

The run config is nested (``{"train": {"tau": 0.2}}``); command lines, search spaces, truth files and
results tables name its values by dotted keys. These four functions are the only translation.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()  # what ``get`` returns for an absent key unless given a default


class NotASection(ValueError):
    """``set_key`` met a value where the key needs a mapping (``train.tau.x`` with ``train.tau: 0.2``)."""


def get_key(tree: dict[str, Any], key: str, default: Any = MISSING) -> Any:
    """The value at ``key``, or ``default`` (``MISSING`` unless given) when any part is absent."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in ``tree`` in place, creating the sections on the way; ``NotASection`` names the
    part of the key that holds a value instead of a mapping."""
    node = tree
    *parents, leaf = key.split(".")
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise NotASection(f"{'.'.join(parents[: i + 1])} is not a section; cannot set {key}")
    node[leaf] = value


def flatten(tree: Any, whole: tuple[str, ...] = (), prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{dotted key: leaf}``; a key in ``whole`` stays one value (a mapping whose
    keys are data, e.g. ``views.op_params``: op names, not config keys)."""
    if not isinstance(tree, dict) or prefix in whole:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, whole, f"{prefix}.{k}" if prefix else str(k)))
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: value}`` → nested mappings (later keys win), the inverse of ``flatten``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        set_key(tree, key, value)
    return tree
