"""One pinned set for every install: requirements.lock is what `make install` (the laptop and CI) and
every node of cluster/gpu.yaml install. These checks fail when the venv running them drifted from the
lock, when pyproject.toml asks for something the lock does not pin, or when a pin was edited by hand
instead of by `make lock`."""

from __future__ import annotations

import hashlib
import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)$", re.MULTILINE)


def cuda_only() -> re.Pattern[str]:
    """The Makefile's pattern of the CUDA torch wheel's packages, which a CPU install leaves out."""
    return re.compile(re.search(r"^CUDA_ONLY := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1))


def pins(text: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def test_the_lock_pins_carry_the_digest_make_lock_wrote():
    """The Makefile's PINS_SHA: sha256 of the pin lines, each with its newline."""
    text = LOCK.read_text()
    lines = "".join(m.group(0) + "\n" for m in PIN.finditer(text))
    digest = re.search(r"^# pins sha256: ([0-9a-f]{64})$", text, re.MULTILINE)
    assert digest, "requirements.lock has no '# pins sha256:' line: make it with `make lock`"
    assert digest.group(1) == hashlib.sha256(lines.encode()).hexdigest(), \
        "requirements.lock's pins were edited by hand: run `make lock`"


def test_the_lock_satisfies_pyproject_and_requirements_in():
    lock = pins(LOCK.read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    wanted += [line.split("#")[0].strip() for line in (ROOT / "requirements.in").read_text().splitlines()]
    for dep in map(Requirement, filter(None, wanted)):
        name = canonicalize_name(dep.name)
        assert name in lock, f"{dep}: not in requirements.lock; run `make lock`"
        assert dep.specifier.contains(lock[name], prereleases=True), \
            f"{dep}: requirements.lock pins {name}=={lock[name]}; run `make lock`"


def test_this_environment_is_exactly_the_lock():
    """Every pin but the CUDA-only ones is installed at its version; torch may be another build (a
    local label such as +cpu) of the same version."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    skip = cuda_only()
    wrong = {name: (version, installed.get(name)) for name, version in pins(LOCK.read_text()).items()
             if not skip.match(f"{name}==") and Version(installed.get(name, "0")).public != Version(version).public}
    assert not wrong, f"installed packages differ from requirements.lock (pin, installed): {wrong}; `make install`"


@pytest.mark.parametrize("name", ["nvidia-cublas", "cuda-toolkit", "triton"])
def test_the_cuda_only_pattern_names_the_cuda_wheel_packages(name):
    lock = pins(LOCK.read_text())
    assert name in lock and cuda_only().match(f"{name}==")
    assert not cuda_only().match("torch==") and not cuda_only().match("numpy==")
