"""The installed package: the wheel that ``pip wheel .`` builds carries the shipped search spaces and no
result file, and a space named by its file name resolves from a non-editable install of that wheel
(site-packages, not this checkout) through the function the search uses."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT_DIRS = ("results/", "analysis/findings/", "benchmarks/results/")
NOT_SOURCE = (".git", ".venv", ".cache", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
              ".ruff_cache")


def build_wheel(tmp_path: Path) -> Path:
    """``pip wheel --no-deps .`` on a copy of the checkout (setuptools writes build/ and egg-info next to
    the sources), without build isolation: the venv's setuptools, no package index needed."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("uclser_tune-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_ships_the_spaces_and_no_results_and_spaces_resolve_by_name(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.relative_to(ROOT / "search_spaces").as_posix() for p in (ROOT / "search_spaces").rglob("*.yaml"))
    assert {"augs.yaml", "smoke.yaml", "truths/augs_ops.yaml"} <= set(shipped)
    missing = [s for s in shipped if f"uclser_tune/search_spaces/{s}" not in names]
    assert not missing, f"shipped spaces not in the wheel: {missing}"
    results = [n for n in names if n.startswith(RESULT_DIRS) or "/findings/" in n]
    assert not results, f"result files in the wheel: {results[:5]}"

    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                          str(wheel)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    # A fresh process with the install first on sys.path (the venv's editable finder comes after it),
    # run from an empty folder so that no relative path can find the file.
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import uclser_tune; "
            "from uclser_tune.search.spaces import SPACES_DIR, load_space, resolve_path; "
            "print(uclser_tune.__file__); print(resolve_path('augs.yaml')); print(resolve_path('smoke')); "
            "print(load_space('augs.yaml').path)")
    work = tmp_path / "empty"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=work,
                         check=False)
    assert out.returncode == 0, out.stderr
    package, augs, smoke, loaded = out.stdout.split()
    installed = site / "uclser_tune"
    assert Path(package).is_relative_to(installed), package  # not the checkout's editable install
    assert Path(augs) == Path(loaded) == installed / "search_spaces" / "augs.yaml"
    assert Path(smoke) == installed / "search_spaces" / "smoke.yaml"
    assert Path(augs).read_bytes() == (ROOT / "search_spaces" / "augs.yaml").read_bytes()
