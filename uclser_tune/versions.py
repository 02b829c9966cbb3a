"""The package versions a result was made with, recorded next to its config and seed."""

from __future__ import annotations

import importlib.metadata as md
import sys


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("uclser-tune", "torch", "ray", "optuna", "numpy", "librosa"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out
