"""cluster/gpu.yaml against Ray's own cluster-config schema, offline (what `ray up` checks before it
contacts a cloud: prepare_config fills the provider's defaults, validate_config checks the schema),
broken copies rejected, and the security rules: only SSH open to the world, no secret in the file,
file mounts of the repository's own paths only, one pre-made security group per cluster (Ray adds no
rule), a head instance profile with a narrow EC2-only policy, pinned subnets; every node installs the
committed lock file with a pinned uv. tests/test_cluster_rehearsal.py runs the file's commands."""

from __future__ import annotations

import copy
import json
import re
import socket
import tomllib
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.aws.config import _configure_iam_role, _configure_security_group
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "cluster" / "gpu.yaml"
HEAD_POLICY = ROOT / "cluster" / "iam" / "head-policy.json"


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
    assert {"./pyproject.toml", "./uclser_tune", "./requirements.lock"} <= set(mounts.values())
    assert "~/uclser_tune" not in mounts and "." not in mounts.values()


def test_one_premade_security_group_per_cluster(config):
    """Every node type names the group made once by the commands in the file's comments: SSH from the
    user's address, everything between members. Ray then creates no group and adds no rule (it would
    admit SSH from anywhere, and a rule can only add access). The group is made under the name
    ray-autoscaler-<cluster_name> (AWS refuses a second group of one name in a VPC), so a cluster of
    another name makes its own; EFS admits NFS from members of that group only."""
    text = CONFIG.read_text()
    assert "security_group" not in config["provider"]
    nodes = [t["node_config"] for t in config["available_node_types"].values()]
    assert all(n["SecurityGroupIds"] == nodes[0]["SecurityGroupIds"] for n in nodes)
    assert len(nodes[0]["SecurityGroupIds"]) == 1
    prepared = check(config)
    prepared["head_node"] = {}
    assert _configure_security_group(copy.deepcopy(prepared)) == prepared  # offline: no AWS call, no change
    assert re.search(rf"CLUSTER={re.escape(config['cluster_name'])}\s", text)
    assert re.search(r"NODES=\$\(aws ec2 create-security-group --group-name ray-autoscaler-\$CLUSTER ", text)
    ingress = re.findall(r"authorize-security-group-ingress --group-id (\$\w+) (.+)", text)
    assert sorted(ingress) == [("$EFS_SG", "--protocol tcp --port 2049 --source-group $NODES"),
                               ("$NODES", "--protocol all --source-group $NODES"),
                               ("$NODES", "--protocol tcp --port 22 --cidr $MYIP/32")]
    assert "create-mount-target --file-system-id $FS --subnet-id $SUBNET --security-groups $EFS_SG" in text
    assert "--cidr $CIDR" not in text  # no mount target open to the whole VPC


def test_pinned_subnets(config):
    """Without SubnetIds Ray takes the first public subnet of any VPC, where EFS may have no mount target."""
    nodes = [t["node_config"] for t in config["available_node_types"].values()]
    assert nodes[0]["SubnetIds"] and all(n["SubnetIds"] == nodes[0]["SubnetIds"] for n in nodes)
    assert "describe-mount-targets --file-system-id $FS --query 'MountTargets[].SubnetId'" in CONFIG.read_text()


def test_head_instance_profile_allows_only_what_the_autoscaler_does(config):
    """The head's profile is named, so Ray makes none (its default has EC2 and S3 full access). The
    policy: describe instances, launch the worker instance types, tag and terminate this cluster's
    nodes (Ray's cluster-name tag); no S3, no IAM (workers get no profile, so no iam:PassRole), no
    stop/start (nodes are terminated, not cached)."""
    head = config["available_node_types"][config["head_node_type"]]["node_config"]
    name = config["cluster_name"]
    assert head["IamInstanceProfile"] == {"Name": f"{name}-head"}
    prepared = check(config)
    prepared["head_node"] = {}
    assert _configure_iam_role(copy.deepcopy(prepared)) == prepared  # offline: Ray makes no profile
    workers = [t["node_config"] for k, t in config["available_node_types"].items() if k != config["head_node_type"]]
    assert not any("IamInstanceProfile" in w for w in workers)
    assert config["provider"]["cache_stopped_nodes"] is False

    def actions(s):
        return [s["Action"]] if isinstance(s["Action"], str) else s["Action"]

    statements = json.loads(HEAD_POLICY.read_text())["Statement"]
    assert {a for s in statements for a in actions(s)} == {
        "ec2:DescribeInstances", "ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances"}
    assert all(s["Effect"] == "Allow" and {"Action", "Resource"} <= s.keys() for s in statements)
    this_cluster = {"StringEquals": {f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}": name}}
    for s in statements:
        if s["Resource"] == "*":  # only reads, or tags set by the launch itself
            assert actions(s) == ["ec2:DescribeInstances"] or s["Condition"] == {
                "StringEquals": {"ec2:CreateAction": "RunInstances"}}, s
        if "ec2:TerminateInstances" in actions(s):
            assert s["Condition"] == this_cluster, s
        if actions(s) == ["ec2:RunInstances"] and s["Resource"] == "arn:aws:ec2:*:*:instance/*":
            assert s["Condition"] == {"StringEquals": {"ec2:InstanceType": sorted(w["InstanceType"] for w in workers)}}
    text = CONFIG.read_text()
    assert "--policy-document file://cluster/iam/head-policy.json" in text
    assert "--assume-role-policy-document file://cluster/iam/head-trust.json" in text
    assert (ROOT / "cluster" / "iam" / "head-trust.json").exists()


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", text, re.MULTILINE))


def test_every_node_installs_the_committed_lock_with_a_pinned_uv(config):
    """The one lock of every install (requirements.lock, carried by file_mounts) is synced exactly on
    every node, with the uv version the lock pins; the installed uv's version check matches what
    `uv --version` prints ("uv 0.13.9 (...)") and nothing else."""
    lock = _pins((ROOT / "requirements.lock").read_text())
    assert lock["ray"] == version("ray") and lock["optuna"] == version("optuna")
    assert lock["torch"] == version("torch").split("+")[0]  # the CPU build here, the CUDA build on the nodes
    assert config["file_mounts"]["~/uclser_tune/requirements.lock"] == "./requirements.lock"
    setup = config["setup_commands"]
    assert config["head_setup_commands"] == config["worker_setup_commands"] == []  # the same set everywhere
    uv = next(c for c in setup if "astral.sh/uv" in c)
    pinned = re.search(r"astral\.sh/uv/([\d.]+)/install\.sh", uv).group(1)
    assert pinned == lock["uv"]
    check_version = re.compile(re.search(r"--version 2>/dev/null \| grep -qE '([^']+)'", uv).group(1))
    for printed in (f"uv {pinned} (x86_64-unknown-linux-gnu)", f"uv {pinned} (0b2357294 2025-10-01)", f"uv {pinned}"):
        assert check_version.search(printed), printed
    for other in (f"uv {pinned}1 (x)", "uv 0.0.1 (x)", f"uvx {pinned}"):
        assert not check_version.search(other), other
    installs = [c for c in setup if " pip " in c]
    assert installs == [c for c in installs if c.startswith("~/.local/bin/uv pip ")] and len(installs) == 2
    assert installs[0].startswith("~/.local/bin/uv pip sync ")
    assert installs[0].endswith(" --python ~/venv/bin/python ~/uclser_tune/requirements.lock")
    assert installs[1].endswith(" --python ~/venv/bin/python --no-deps -e ~/uclser_tune")
    assert "--seed" not in " ".join(setup)  # the venv holds the lock's packages only
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert "ray start" not in cmd or "RAY_AUTH_MODE=token" in cmd
    # the package allows a range of Ray releases; the lock every node installs must be inside it
    ray_req = next(Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                   if Requirement(r).name == "ray")
    assert ray_req.specifier.contains(lock["ray"]), (str(ray_req), lock["ray"])
