"""A multi-node Ray cluster on this machine, loopback only: a head and N worker nodes, each its own
``ray start --block`` process group, so that a test can kill one node (a node failure) and ``stop``
kills exactly what was started (never ``ray stop``, which stops every Ray on the machine).

    python cluster/local_cluster.py start --workers 2 --dir /tmp/rc    # prints the address
    python cluster/local_cluster.py exec --dir /tmp/rc -- python -m uclser_tune.search \\
        --space smoke.yaml --address 127.0.0.2:6390 --node-ip-address 127.0.0.2 --storage-path /tmp/rc/runs
    python cluster/local_cluster.py stop --dir /tmp/rc

Nodes: head 127.0.0.2 (0 CPUs by default, so trials run on the workers), workers 127.0.0.3, .4, ...
(Ray rewrites 127.0.0.1 to the outside interface, so 127.0.0.2+). Ray 2.60's GCS and raylets listen
on every interface whatever ``--node-ip-address`` says, so as root every node and the driver run in
a private network namespace that has only ``lo``: nothing is reachable from outside and no port can
clash with another Ray on the machine. Without root the nodes use the host's network (advertising
loopback addresses only). Ports are explicit (GCS ``port``, then fixed offsets per node). Token authentication is on for every
node and driver with a token file of the cluster's own (``RAY_AUTH_MODE=token``,
``RAY_AUTH_TOKEN_PATH``). Each cluster has its own short temp dir, so no stale ``ray_current_cluster``
file of another cluster is ever read (Ray's socket paths must stay under ~107 characters).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"
STATE = "cluster.json"


@dataclass
class Node:
    name: str
    ip: str
    pid: int  # the `ray start --block` process; its process group is the node
    log: str


@dataclass
class LocalCluster:
    """``with LocalCluster(workers=2) as c: subprocess.run([*c.enter, ...], env=c.driver_env)``."""

    workers: int = 2
    port: int = 6390
    worker_cpus: int = 1
    head_cpus: int = 0
    root: str = ""  # temp dir of the cluster ('' = a new one under /tmp)
    isolate: str | bool = "auto"  # private network namespace: True, False or 'auto' (when namespaces_work())
    masked: list[str] = field(default_factory=list)  # paths hidden (empty, read-only) from workers; needs root
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. RAY_health_check_* for the head's GCS
    nodes: list[Node] = field(default_factory=list)
    holder: int = 0  # pid of the process that holds the network namespace (0: none)
    launched: int = 0  # nodes launched so far: node i is 127.0.0.<2+i>, ports port + 100 * (i + 1) + 0..99

    # ------------------------------------------------------------------ set-up
    def __post_init__(self) -> None:
        self.root = self.root or tempfile.mkdtemp(prefix="rc", dir="/tmp")
        Path(self.root).mkdir(parents=True, exist_ok=True)
        if self.isolate == "auto":
            self.isolate = namespaces_work()

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every node (and driver): token authentication with the cluster's token file."""
        token = Path(self.root) / "auth_token"
        if not token.exists():
            token.write_text(secrets.token_hex(32))
            token.chmod(0o600)
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                "RAY_USAGE_STATS_ENABLED": "0", **self.extra_env}

    @property
    def driver_env(self) -> dict[str, str]:
        """Environment of a driver: also ``RAY_ADDRESS``, so that ``ray.init(address="auto")`` (the
        search's ``--address auto``) joins this cluster."""
        return {**self.env, "RAY_ADDRESS": self.address}

    @property
    def enter(self) -> list[str]:
        """Command prefix that runs a command next to the nodes (in their network namespace)."""
        if not self.holder:
            return []
        return ["nsenter", f"--net=/proc/{self.holder}/ns/net"]

    def start(self) -> LocalCluster:
        if self.isolate and not self.holder:
            holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up; exec sleep infinity"],
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.holder = holder.pid
            _wait(lambda: _netns(self.holder) != _netns(os.getpid()), 10, "network namespace")

            def lo_up() -> bool:
                return "UP" in subprocess.run([*self.enter, "ip", "link", "show", "lo"], check=False,
                                              capture_output=True, text=True).stdout

            _wait(lo_up, 10, "loopback up in the namespace")
        head_ports = ["--port", str(self.port), "--ray-client-server-port", str(self.port + 1),
                      "--dashboard-port", str(self.port + 2), "--include-dashboard", "false",
                      "--dashboard-host", "127.0.0.1"]
        self._launch("head", HEAD_IP, ["--head", *head_ports, "--num-cpus", str(self.head_cpus)], [])
        for _ in range(self.workers):
            self.add_worker()
        self.wait_for_nodes(1 + self.workers)
        self.save()
        return self

    def add_worker(self, *ray_start_args: str) -> Node:
        """One more worker node, e.g. ``add_worker("--num-gpus", "1")`` (a GPU resource, no GPU needed)."""
        i = self.launched
        node = self._launch(f"w{i}", f"127.0.0.{2 + i}",
                            ["--address", self.address, "--num-cpus", str(self.worker_cpus), *ray_start_args],
                            self.masked)
        self.save()
        return node

    def _launch(self, name: str, ip: str, args: list[str], masked: list[str]) -> Node:
        i = self.launched
        self.launched += 1
        base = self.port + 100 * (i + 1)  # node i owns ports base .. base + 99
        if any(base <= reserved < base + 100 for reserved in (8265, 10001)):  # Ray refuses to start such a node
            raise ValueError(f"node {i}'s ports {base}-{base + 99} hold Ray's default 8265/10001: use another --port")
        ports = ["--node-manager-port", base, "--object-manager-port", base + 1, "--metrics-export-port", base + 2,
                 "--dashboard-agent-listen-port", base + 3, "--dashboard-agent-grpc-port", base + 4,
                 "--runtime-env-agent-port", base + 5, "--min-worker-port", base + 10, "--max-worker-port", base + 99]
        cmd = [RAY, "start", "--block", "--node-ip-address", ip, "--temp-dir", f"{self.root}/{name}",
               "--disable-usage-stats", *args, *map(str, ports)]
        if masked:  # an own mount namespace with an empty read-only tmpfs over each masked path
            mounts = " && ".join(f"mount -t tmpfs -o ro,size=1m none {shlex.quote(p)}" for p in masked)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh", *cmd]
        log = f"{self.root}/{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([*self.enter, *cmd], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        node = Node(name, ip, proc.pid, log)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        """Until the GCS lists ``n`` alive nodes (asked from inside the namespace, as a driver would)."""
        probe = ("import sys, ray; from ray._raylet import GcsClient; "
                 f"c = GcsClient(address='{self.address}'); "
                 "sys.exit(0 if sum(v.state == 0 for v in c.get_all_node_info(timeout=5).values()) "
                 f">= {n} else 1)")
        _wait(lambda: self._alive() and subprocess.run([*self.enter, sys.executable, "-c", probe], check=False,
                                                       env=self.env, capture_output=True).returncode == 0,
              timeout, f"{n} Ray nodes (logs: {self.root}/*.log)")

    def _alive(self) -> bool:
        dead = [n.name for n in self.nodes if not _running(n.pid)]
        if dead:
            raise RuntimeError(f"node(s) {dead} exited; see {self.root}/<node>.log")
        return True

    # ---------------------------------------------------------------- tear-down
    def kill(self, node: Node) -> None:
        """A node failure: SIGKILL the node's process group and every process it started (Ray's worker
        processes, trials included, run in their own sessions under the raylet)."""
        if _cmdline_has(node.pid, f"{self.root}/{node.name}"):  # not a pid reused since
            victims = _descendants(node.pid)
            _signal(os.killpg, node.pid)
            for pid in victims:
                _signal(os.kill, pid)
            _reap(node.pid)
            _wait(lambda: not any(map(_running, victims)), 10, f"{node.name}'s processes to exit")
        self.nodes = [n for n in self.nodes if n.pid != node.pid]
        self.save()

    def stop(self) -> None:
        for node in reversed(list(self.nodes)):
            self.kill(node)
        if self.holder and _cmdline_has(self.holder, "sleep") and _netns(self.holder) != _netns(os.getpid()):
            _signal(os.killpg, self.holder)
            _reap(self.holder)
        self.holder = 0
        (Path(self.root) / STATE).unlink(missing_ok=True)

    def save(self) -> None:
        (Path(self.root) / STATE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: str) -> LocalCluster:
        state = json.loads((Path(root) / STATE).read_text())
        nodes = [Node(**n) for n in state.pop("nodes")]
        return cls(**state, nodes=nodes)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    """A free GCS port for a cluster on the shared host network, whose block of node ports (port ..
    port + 600) misses Ray's 8265 and 10001."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind((HEAD_IP, 0))
            port = s.getsockname()[1]
        if port + 600 < 65536 and not any(port <= reserved < port + 600 for reserved in (8265, 10001)):
            return port


def namespaces_work() -> bool:
    """Whether this process may create network and mount namespaces (as root, with util-linux's
    unshare/nsenter and iproute2). Without them the nodes share the host's network (see above)."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "ip"))):
        return False
    return subprocess.run(["unshare", "--net", "--mount", "true"], check=False, capture_output=True).returncode == 0


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _cmdline_has(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal(kill, pid: int) -> None:
    try:
        kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)  # our own child (same process that started it): no zombie left
    except ChildProcessError:
        pass


def _wait(ok, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python cluster/local_cluster.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="start a head and N workers, print the address, return")
    start.add_argument("--workers", type=int, default=2)
    start.add_argument("--port", type=int, default=6390, help="GCS port; other ports are fixed offsets of it")
    start.add_argument("--worker-cpus", type=int, default=1, help="CPUs each worker advertises (1: trials spread)")
    start.add_argument("--head-cpus", type=int, default=0, help="CPUs the head advertises (0: no trial on it)")
    start.add_argument("--no-isolate", action="store_true", help="no private network namespace")
    for name in ("start", "exec", "stop"):
        (start if name == "start" else sub.add_parser(name, help={
            "exec": "run a command next to the nodes (after --), with the cluster's environment",
            "stop": "kill the nodes this cluster started"}[name])).add_argument("--dir", required=True)
    sub.choices["exec"].add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.cmd == "start":
        cluster = LocalCluster(workers=args.workers, port=args.port, worker_cpus=args.worker_cpus,
                               head_cpus=args.head_cpus, root=args.dir, isolate=False if args.no_isolate else "auto")
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"Ray cluster at {cluster.address}: {', '.join(f'{n.name} {n.ip}' for n in cluster.nodes)}; "
              f"network namespace: {'private' if cluster.holder else 'host'}; logs in {cluster.root}")
        return 0
    cluster = LocalCluster.load(args.dir)
    if args.cmd == "stop":
        cluster.stop()
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return subprocess.run([*cluster.enter, *command], check=False, env=cluster.driver_env).returncode


if __name__ == "__main__":
    sys.exit(main())
