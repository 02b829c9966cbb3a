"""cluster/gpu.yaml against Ray's own cluster-config schema, offline (what `ray up` checks before it
contacts a cloud: prepare_config fills the provider's defaults, validate_config checks the schema),
broken copies rejected, and the security rules: only SSH open to the world, no secret in the file,
file mounts of the repository's own paths only, a security group per cluster name; every node
installs the committed lock file with a pinned uv."""

from __future__ import annotations

import copy
import re
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "cluster" / "gpu.yaml"
sys.path.insert(0, str(ROOT / "cluster"))
from submit_search import gpus_per_trial, search_argv


@pytest.fixture
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach the network (a cloud API) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def check(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_gpu_yaml_passes_rays_schema(config):
    prepared = check(config)
    head, worker = prepared["available_node_types"]["head"], prepared["available_node_types"]["gpu_worker"]
    assert prepared["provider"]["type"] == "aws" and prepared["head_node_type"] == "head"
    assert head["max_workers"] == 0 and head["resources"] == {"CPU": 0}  # the head runs the driver only
    assert worker["min_workers"] == 0 and 1 <= worker["max_workers"] <= prepared["max_workers"]
    assert worker["resources"]["GPU"] >= 1


def _misspell_min_workers(c):
    c["available_node_types"]["gpu_worker"]["min_worker"] = c["available_node_types"]["gpu_worker"].pop("min_workers")


def _misspell_node_types(c):
    c["avaliable_node_types"] = c.pop("available_node_types")


def _string_max_workers(c):
    c["max_workers"] = "eight"


def _fractional_gpu_resource(c):
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5


def _commands_not_a_list(c):
    c["head_start_ray_commands"] = "ray start --head"


def _unknown_head_type(c):
    c["head_node_type"] = "ray.head.default"


def _too_many_min_workers(c):
    c["available_node_types"]["gpu_worker"]["min_workers"] = 9


@pytest.mark.parametrize(("breakage", "error", "match"), [
    (_misspell_min_workers, jsonschema.ValidationError, "'min_worker' was unexpected"),
    (_misspell_node_types, jsonschema.ValidationError, "'avaliable_node_types' was unexpected"),
    (_string_max_workers, jsonschema.ValidationError, "'eight' is not of type 'integer'"),
    (_fractional_gpu_resource, jsonschema.ValidationError, "0.5 is not of type 'integer'"),
    (_commands_not_a_list, jsonschema.ValidationError, "is not of type 'array'"),
    (_unknown_head_type, ValueError, "head_node_type` must be one of `available_node_types"),
    (_too_many_min_workers, ValueError, "smaller than the sum of `min_workers`"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_a_broken_copy_is_rejected(config, breakage, error, match):
    breakage(config)
    with pytest.raises(error, match=re.escape(match)):
        check(config)


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    else:
        yield str(node)


def test_only_ssh_is_open_to_the_world(config):
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or any(
            r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", []))
        assert not world or (rule["FromPort"], rule["ToPort"]) == (22, 22), rule
    values = " ".join(_strings(config))
    assert "0.0.0.0" not in values and "::/0" not in values  # no world-open rule or all-interfaces bind
    for cmd in config["head_start_ray_commands"]:
        if "--head" in cmd:
            assert "--dashboard-host=127.0.0.1" in cmd  # reached through `ray dashboard` (SSH) only


# Environment variables the file may set, none of them a credential: a new one must be added here
# on purpose (a password or token must reach the nodes as a file mount, never as a value in the file).
PLAIN_ENV = {"RAY_AUTH_MODE", "UCLSER_CACHE", "UCLSER_RUNS"}


def test_no_secret_in_the_file(config):
    text = CONFIG.read_text()
    commands = " ".join(config["setup_commands"] + config["head_start_ray_commands"]
                        + config["worker_start_ray_commands"])
    assert set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", commands)) == PLAIN_ENV
    assert not re.findall(r"://[^/\s@]*:[^/\s@]*@", text)  # no URL with user:password@
    assert "PRIVATE KEY" not in text and not re.search(r"\bAKIA[0-9A-Z]{16}\b", text)  # no key material
    assert not {"ssh_private_key", "KeyName"} & set(_strings(config))  # Ray's own key pair


def test_file_mounts_name_the_repos_own_paths(config):
    """Relative local paths resolve against the folder `ray up` runs in: naming the repository's own
    files makes `ray up` from another folder fail (Ray asserts every local path exists) instead of
    uploading that folder, e.g. a home with ~/.ssh and ~/.aws."""
    mounts = config["file_mounts"]
    assert mounts.pop("~/.ray/auth_token") == "~/.ray/auth_token"  # the one file from outside the repo
    for remote, local in mounts.items():
        assert local.startswith("./") and local.strip("./") and not local.startswith("./.."), local
        assert remote == f"~/uclser_tune/{local[2:]}" and (ROOT / local).exists(), (remote, local)
    assert {"./pyproject.toml", "./uclser_tune", "./cluster"} <= set(mounts.values())
    assert "~/uclser_tune" not in mounts and "." not in mounts.values()


def test_security_group_is_named_after_the_cluster(config):
    """No fixed group name: Ray then creates ray-autoscaler-<cluster_name>, one per cluster."""
    assert "security_group" not in config["provider"]
    assert not any("SecurityGroupIds" in t["node_config"] for t in config["available_node_types"].values())


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", text, re.MULTILINE))


def test_every_node_installs_the_committed_lock_with_a_pinned_uv(config):
    from packaging.requirements import Requirement

    lock = _pins((ROOT / "cluster" / "requirements.lock").read_text())
    torch_pin = re.search(r'torch==([\d.]+)', (ROOT / "Makefile").read_text()).group(1)
    assert lock["ray"] == version("ray") and lock["torch"] == torch_pin and lock["optuna"] == version("optuna")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, pyproject):  # the lock satisfies the package's own requirements
        assert dep.name in lock and dep.specifier.contains(lock[dep.name], prereleases=True), dep
    setup = config["setup_commands"]
    assert config["head_setup_commands"] == config["worker_setup_commands"] == []  # the same set everywhere
    uv = next(c for c in setup if "astral.sh/uv" in c)
    pinned = re.search(r"astral\.sh/uv/([\d.]+)/install\.sh", uv).group(1)
    assert f"'uv {pinned}'" in uv  # an installed uv of another version is replaced
    install = [c for c in setup if "pip install" in c]
    assert install == [c for c in install if c.startswith("~/.local/bin/uv pip install")]
    assert "-r ~/uclser_tune/cluster/requirements.lock" in install[0]
    assert "--no-deps -e ~/uclser_tune" in install[1] and len(install) == 2
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in cmd
    assert f"ray[tune]=={version('ray')}" in (ROOT / "pyproject.toml").read_text()


def test_submit_script_joins_the_cluster_with_shared_storage():
    env = {"UCLSER_RUNS": "/mnt/efs/uclser/runs", "UCLSER_OPTUNA_URL": "postgresql://optuna@db/optuna"}
    argv = search_argv(["--space", "augs.yaml"], env)
    assert argv[:2] == ["--address", "auto"] and argv[-2:] == ["--space", "augs.yaml"]
    assert "/mnt/efs/uclser/runs" in argv and env["UCLSER_OPTUNA_URL"] in argv
    assert "--storage-url" not in search_argv([], {})


def test_submit_script_knows_when_trials_want_gpus():
    assert gpus_per_trial(search_argv(["--space", "augs.yaml"], {})) == 0.5  # from the space file
    assert gpus_per_trial(search_argv(["--space", "smoke.yaml"], {})) == 0
    assert gpus_per_trial(search_argv(["--space", "augs.yaml", "--gpus-per-trial", "0"], {})) == 0
