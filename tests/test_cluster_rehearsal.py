"""The first `ray up` of cluster/gpu.yaml, rehearsed on this machine: every command of setup_commands and
of the head's and the worker's start commands runs, twice (a second `ray up` runs them again), in a
fresh home folder per node, wrapped as Ray 2.60's command runner wraps them (an interactive bash that
sources ~/.bashrc; the worker's with RAY_HEAD_IP exported) after the file mounts are copied in.

Stand-ins, first on PATH, take the place of what only a cloud node has; each records its call:
- ``sudo`` runs the command as this user; ``apt-get`` fails its first call as apt does while
  unattended-upgrades holds the lock, then "installs" nfs-common (a ``mount.nfs4`` helper);
  ``sleep`` returns at once; ``mount``/``mountpoint`` mark and test the EFS mount point, which is a
  folder of the node's temp dir (``/mnt/efs`` in the commands is the only text changed);
- ``curl`` serves uv's versioned installer: it installs the test venv's own uv (offline), and only
  when that is the version the URL asks for;
- that uv runs for real for ``--version`` and ``venv`` (offline, no Python download). ``uv pip sync``
  of the lock would fetch the multi-GB CUDA torch from the package index, and the editable install
  builds in an isolated env from the index, so both are checked instead of run: the exact
  arguments, the lock file carried by file_mounts with its ``pins sha256`` line, the project's
  pyproject.toml. The sync puts the ``ray`` stand-in into ~/venv/bin, so the start commands find
  ``ray`` only through the venv that ~/.bashrc activates. What the lock holds is checked by
  tests/test_lock.py and by `make install`, which installs the same lock;
- ``ray`` records its arguments, RAY_AUTH_MODE and whether the token and the bootstrap config are
  where Ray reads them; it never runs Ray (a real ``ray stop`` would stop every Ray on the machine);
- ``~/ray_bootstrap_config.yaml`` is the prepared config.

The shells read no system profile (Debian's /etc/profile resets PATH); PATH holds the stand-ins and
links to the few system tools the commands use, so no other ``ray`` or ``uv`` can be reached. Nothing
here needs the network: uv runs with UV_OFFLINE and never downloads a Python, and as root every
command runs in a network namespace without any interface that is up."""

from __future__ import annotations

import copy
import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.command_runner import _with_interactive
from ray.autoscaler._private.util import prepare_config, with_head_node_ip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "cluster" / "gpu.yaml"
HEAD_IP = "127.0.0.2"

# One program for every stand-in; it acts by the name it is called under. Run with -S: stdlib only.
STANDIN = r'''
import json, os, shutil, subprocess, sys
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
if name == "standin.py":  # called by its file name: the name comes first
    name, args = args[0], args[1:]
state = Path(os.environ["REHEARSAL"])
home = Path(os.environ["HOME"])
record = {"tool": name, "args": args}


def log(**extra):
    with open(state / "calls.jsonl", "a") as f:
        f.write(json.dumps({**record, **extra}) + "\n")


def fail(message, code=1):
    log(error=message)
    print(f"{name} (stand-in): {message}", file=sys.stderr)
    sys.exit(code)


if name == "sudo":
    log()
    os.execvp(args[0], args)
elif name == "sleep":
    log()
elif name == "apt-get":
    busy = state / "apt-was-busy"
    if not busy.exists():  # the first call meets unattended-upgrades
        busy.touch()
        fail("E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1234 (apt-get)", 100)
    log()
    if "install" in args:
        assert "nfs-common" in args, args
        helper = state / "sbin" / "mount.nfs4"
        helper.write_text("#!/bin/sh\nexit 0\n")
        helper.chmod(0o755)
elif name == "mountpoint":
    log()
    mounts = state / "mounts"
    sys.exit(0 if mounts.exists() and args[-1] in mounts.read_text().split("\n") else 1)
elif name == "mount":
    log()
    if shutil.which("mount.nfs4") is None:
        fail("bad option; for several filesystems (e.g. nfs, cifs) you might need a /sbin/mount.<type> helper", 32)
    if not Path(args[-1]).is_dir():
        fail(f"mount point {args[-1]} does not exist", 32)
    with open(state / "mounts", "a") as f:
        f.write(args[-1] + "\n")
elif name == "curl":
    log()
    url = args[-1]
    prefix, suffix = "https://astral.sh/uv/", "/install.sh"
    if not (url.startswith(prefix) and url.endswith(suffix)):
        fail(f"no stand-in for {url}")
    want = url[len(prefix):-len(suffix)]
    print(f'exec "{sys.executable}" -S "{os.environ["REHEARSAL_STANDIN"]}" install-uv {want}')
elif name == "install-uv":  # the installer the curl stand-in serves (uv installs to ~/.local/bin)
    want = args[0]
    have = subprocess.run([os.environ["REHEARSAL_UV"], "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1]
    if have != want:
        fail(f"only uv {have} can be installed offline, not uv {want}")
    log()
    target = home / ".local" / "bin" / "uv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"#!{sys.executable} -S\n" + Path(os.environ["REHEARSAL_STANDIN"]).read_text())
    target.chmod(0o755)
elif name == "uv" and args[:1] != ["pip"]:
    log()
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    os.execve(os.environ["REHEARSAL_UV"], ["uv", *args], env)
elif name == "uv":
    log()
    command, rest = args[1], [a for a in args[2:] if a != "-q"]
    if rest[:1] != ["--python"] or not os.access(rest[1], os.X_OK):
        fail(f"uv pip {command}: --python must come first and name the venv's interpreter: {rest}")
    venv_bin = Path(rest[1]).parent
    if command == "sync":
        lock = Path(rest[2])
        if len(rest) != 3 or not lock.is_file():
            fail(f"uv pip sync: no lock file at {rest[2:]}")
        last = lock.read_text().rstrip("\n").rsplit("\n", 1)[-1]
        if not last.startswith("# pins sha256: "):
            fail(f"{lock} does not end with its pins sha256 line")
        (venv_bin / "ray").write_text(f"#!{sys.executable} -S\n" + Path(os.environ["REHEARSAL_STANDIN"]).read_text())
        (venv_bin / "ray").chmod(0o755)
    elif command == "install":
        if rest[2:4] != ["--no-deps", "-e"] or len(rest) != 5 or not (Path(rest[4]) / "pyproject.toml").is_file():
            fail(f"uv pip install: expected --no-deps -e <project>, got {rest[2:]}")
    else:
        fail(f"no stand-in for uv pip {command}")
elif name == "ray":
    config = os.path.expanduser(next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), ""))
    log(auth=os.environ.get("RAY_AUTH_MODE"), venv=os.environ.get("VIRTUAL_ENV"),
        token=(home / ".ray" / "auth_token").is_file(), bootstrap=bool(config) and Path(config).is_file())
elif name == "ray-outside-the-venv":
    fail("ray was found outside ~/venv: ~/.bashrc did not activate it")
else:
    fail("unknown stand-in")
'''

TOOLS = ["bash", "sh", "grep", "head", "mkdir", "chown", "chmod", "cp", "cat", "hostname", "cut", "env", "rm",
         "ln", "ls", "id", "uname", "sed", "touch", "tr", "dirname", "basename", "readlink"]
STANDINS = ["sudo", "sleep", "apt-get", "mountpoint", "mount", "curl"]
# As root, every command runs in a network namespace of its own, which has no interface but a loopback
# that is down: a command that tried to reach the package index would fail the rehearsal.
ISOLATE = [shutil.which("unshare"), "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []


class Node:
    """One cloud node: a fresh home, the node's own sbin (where nfs-common lands), its EFS folder and
    the record of its stand-ins' calls."""

    def __init__(self, base: Path, name: str, bin_dir: Path, standin: Path, uv: Path, config: dict):
        self.root = base / name
        self.home = self.root / "home"
        self.efs = self.root / "mnt" / "efs"
        self.state = self.root / "state"
        for d in (self.home, self.state / "sbin"):
            d.mkdir(parents=True)
        # a fresh Ubuntu image's ~/.bashrc does nothing in a non-interactive shell
        (self.home / ".bashrc").write_text("case $- in\n    *i*) ;;\n    *) return;;\nesac\n")
        self.env = {"HOME": str(self.home), "USER": getpass.getuser(), "LANG": "C.UTF-8",
                    "PATH": f"{self.state / 'sbin'}:{bin_dir}", "REHEARSAL": str(self.state),
                    "REHEARSAL_STANDIN": str(standin), "REHEARSAL_UV": str(uv)}
        self.config = config

    def copy_file_mounts(self, laptop_home: Path) -> None:
        """What `ray up` uploads: local paths from the repo root (or the laptop's home for ~/...)."""
        for remote, local in self.config["file_mounts"].items():
            assert remote.startswith("~/"), remote
            src = laptop_home / local[2:] if local.startswith("~/") else ROOT / local
            dst = self.home / remote[2:]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".git"))
            else:
                shutil.copy2(src, dst)

    def run(self, cmd: str, head_ip: str | None = None) -> subprocess.CompletedProcess:
        """``cmd`` as Ray's command runner runs it over SSH, /mnt/efs moved into the node's folder."""
        cmd = cmd.replace("/mnt/efs", str(self.efs))
        if head_ip:
            (cmd,) = with_head_node_ip([cmd], head_ip)
        argv = _with_interactive(cmd)  # ["bash", "--login", "-c", "-i", <quoted for the remote shell>]
        assert argv[:4] == ["bash", "--login", "-c", "-i"], argv
        return subprocess.run([*ISOLATE, "bash", "--noprofile", "--norc", "-i", "-c", shlex.split(argv[4])[0]],
                              env=self.env, cwd=self.home, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60, check=False)

    def calls(self, tool: str | None = None) -> list[dict]:
        path = self.state / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [c for c in map(json.loads, lines) if tool is None or c["tool"] == tool]


def run_all(node: Node, commands: list[str], head_ip: str | None = None) -> None:
    for cmd in commands:
        done = node.run(cmd, head_ip)
        assert done.returncode == 0, f"{cmd}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _snapshot(node: Node) -> dict:
    cfg = (node.home / "venv" / "pyvenv.cfg").stat()
    return {"bashrc": (node.home / ".bashrc").read_text(), "venv": (cfg.st_ino, cfg.st_mtime_ns),
            "uv": (node.home / ".local" / "bin" / "uv").stat().st_mtime_ns}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Both nodes through two `ray up`s: setup_commands, then their start commands, twice."""
    base = tmp_path_factory.mktemp("rehearsal")
    config = yaml.safe_load(CONFIG.read_text())
    uv = Path(sys.executable).parent / "uv"
    python311 = sys._base_executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if not uv.exists() or python311 is None:
        pytest.skip("needs the test venv's uv and a Python 3.11")

    standin = base / "standin.py"
    standin.write_text(STANDIN)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    for name in STANDINS:
        (bin_dir / name).write_text(f"#!{sys.executable} -S\n{STANDIN}")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "ray").write_text(f"#!{sys.executable} -S\nimport sys\nsys.argv[0] = 'ray-outside-the-venv'\n"
                                 f"{STANDIN}")
    (bin_dir / "ray").chmod(0o755)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3.11").symlink_to(python311)

    laptop = base / "laptop"
    (laptop / ".ray").mkdir(parents=True)
    (laptop / ".ray" / "auth_token").write_text("rehearsal-token\n")
    bootstrap = yaml.safe_dump(prepare_config(copy.deepcopy(config)))

    nodes, snapshots = {}, {}
    for kind, start, head_ip in (("head", "head_start_ray_commands", None),
                                 ("worker", "worker_start_ray_commands", HEAD_IP)):
        node = nodes[kind] = Node(base, kind, bin_dir, standin, uv, config)
        assert node.run("command -v mount.nfs4").returncode == 1  # a bare node
        snapshots[kind] = []
        for _ in range(2):
            node.copy_file_mounts(laptop)
            if kind == "head":
                (node.home / "ray_bootstrap_config.yaml").write_text(bootstrap)
            run_all(node, config["setup_commands"] + config[f"{kind}_setup_commands"])
            snapshots[kind].append(_snapshot(node))
            run_all(node, config[start], head_ip)
    return config, nodes, snapshots


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_a_second_ray_up_changes_nothing(rehearsal, kind):
    """uv is installed once (its version check matches what the installed uv prints), the venv is made
    once, ~/.bashrc gets its lines once, nfs-common is installed and EFS mounted once."""
    _, nodes, snapshots = rehearsal
    node = nodes[kind]
    first, second = snapshots[kind]
    installs = [c for c in node.calls("install-uv") if "error" not in c]
    assert len(installs) == 1, "uv was installed again: the version check does not match what uv prints"
    assert first == second
    assert [c["args"][0] for c in node.calls("uv") if c["args"][0] != "pip"] == ["venv", "--version"]
    assert first["bashrc"].count("source ~/venv/bin/activate") == 1
    assert len([c for c in node.calls("apt-get") if "install" in c["args"]]) == 1
    assert len(node.calls("mount")) == 1 and len(node.calls("mountpoint")) == 2


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_the_setup_waits_for_apt_and_mounts_efs(rehearsal, kind):
    _, nodes, _ = rehearsal
    node = nodes[kind]
    apt = node.calls("apt-get")
    assert [c["args"][2] for c in apt] == ["update", "update", "install"] and "error" in apt[0]  # lock busy
    assert all(c["args"][:2] == ["-o", "DPkg::Lock::Timeout=300"] for c in apt)
    assert len(node.calls("sleep")) == 1  # one retry after the lock error
    (mount,) = node.calls("mount")
    assert mount["args"][:2] == ["-t", "nfs4"] and re.fullmatch(r"fs-[\w-]+\.efs\.[\w-]+\.amazonaws\.com:/",
                                                                 mount["args"][-2])
    for sub in ("runs", "cache", "data"):
        assert (node.efs / "uclser" / sub).is_dir()


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_the_lock_is_synced_into_the_venv(rehearsal, kind):
    _, nodes, _ = rehearsal
    node = nodes[kind]
    python = str(node.home / "venv" / "bin" / "python")
    pip = [c["args"] for c in node.calls("uv") if c["args"][0] == "pip"]
    sync = ["pip", "sync", "-q", "--python", python, str(node.home / "uclser_tune" / "requirements.lock")]
    install = ["pip", "install", "-q", "--python", python, "--no-deps", "-e", str(node.home / "uclser_tune")]
    assert pip == [sync, install, sync, install]
    cfg = (node.home / "venv" / "pyvenv.cfg").read_text()
    assert re.search(r"^version_info = 3\.11\.", cfg, re.MULTILINE) and "seed" not in cfg
    login = node.run("echo $VIRTUAL_ENV $RAY_AUTH_MODE $UCLSER_CACHE $UCLSER_RUNS")
    assert login.stdout.split() == [str(node.home / "venv"), "token", str(node.efs / "uclser" / "cache"),
                                    str(node.efs / "uclser" / "runs")]


def test_the_head_starts_ray_with_token_auth_and_the_bootstrap_config(rehearsal):
    _, nodes, _ = rehearsal
    head = nodes["head"]
    ray = head.calls("ray")
    assert [c["args"][0] for c in ray] == ["stop", "start", "stop", "start"]
    for start in ray[1::2]:
        assert "--head" in start["args"] and "--dashboard-host=127.0.0.1" in start["args"]
        assert start["auth"] == "token" and start["token"] and start["bootstrap"], start
        assert start["venv"] == str(head.home / "venv")


def test_the_worker_joins_the_head(rehearsal):
    _, nodes, _ = rehearsal
    worker = nodes["worker"]
    ray = worker.calls("ray")
    assert [c["args"][0] for c in ray] == ["stop", "start", "stop", "start"]
    for start in ray[1::2]:
        assert f"--address={HEAD_IP}:6379" in start["args"]
        assert start["auth"] == "token" and start["token"] and start["venv"] == str(worker.home / "venv")
