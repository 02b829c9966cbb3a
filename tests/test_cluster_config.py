"""cluster/gpu.yaml against Ray's own cluster-config schema, offline (what `ray up` checks before it
contacts a cloud: prepare_config fills the provider's defaults, validate_config checks the schema),
broken copies rejected, and the security rules: only SSH open to the world, no secret in the file."""

from __future__ import annotations

import copy
import re
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
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


SECRET = re.compile(
    r"(password|passwd|secret|api[_-]?key|PGPASSWORD|RAY_AUTH_TOKEN)\s*[:=]\s*\S"  # key: value / KEY=value
    r"|://[^/\s:@]+:[^/\s@]+@"  # a URL with user:password@
    r"|AKIA[0-9A-Z]{16}"  # an AWS access key id
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----", re.IGNORECASE)


@pytest.mark.parametrize("text", ["postgresql://optuna:hunter2@db/optuna", "export PGPASSWORD=hunter2",
                                  "password: hunter2", "aws_key AKIAABCDEFGHIJKLMNOP"])
def test_the_secret_check_catches(text):
    assert SECRET.search(text)


def test_no_secret_in_the_file():
    assert not SECRET.search(CONFIG.read_text())


def test_versions_and_install_match_the_repo(config):
    pins = set(re.findall(r'ray\[[a-z,]+\]==([\d.]+)', " ".join(config["head_setup_commands"] +
                                                                    config["worker_setup_commands"])))
    assert pins == {version("ray")} and f"ray[tune]=={version('ray')}" in (ROOT / "pyproject.toml").read_text()
    torch_pin = re.search(r'torch==([\d.]+)', (ROOT / "Makefile").read_text()).group(1)
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        text = " ".join(commands)
        assert f"torch=={torch_pin}" in text and "-e ~/uclser_tune" in text
        assert text.index("torch==") < text.index("-e ~/uclser_tune")  # torch first, then the package
    assert config["file_mounts"]["~/uclser_tune"] == "."
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in cmd


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
