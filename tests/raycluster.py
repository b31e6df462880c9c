"""A real local Ray cluster for the tests: a head and worker nodes, each started with
``ray start --block`` as its own process group on 127.0.0.1 (own temp dir, own ports, one CPU,
a small object store), stopped by signalling those groups only (never ``ray stop``, which
stops every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE = 80 * 1000 * 1000
START_TIMEOUT = 120.0


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env() -> dict[str, str]:
    """The environment of every process of the test cluster and of its drivers: this
    worktree's daulat, no token authentication (a throwaway cluster on 127.0.0.1), no usage
    statistics."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    log: Path

    def session_pids(self) -> list[int]:
        """Every live process of this node: its session (Ray's workers have process groups of
        their own, but stay in the session ``ray start`` began)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) != self.proc.pid:
                    continue
                # A zombie has ended (its parent has not reaped it yet): not waited for.
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
                continue
        return pids

    def shard_workers(self) -> list[int]:
        """PIDs of this node's worker processes running a daulat shard right now."""
        found = []
        for pid in self.session_pids():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if cmd.startswith(b"ray::run_shard"):
                    found.append(pid)
        return found

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.session_pids():
            time.sleep(0.2)
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@dataclass
class RayCluster:
    address: str
    head: Node
    workers: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def shard_workers(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.shard_workers()]

    def stop(self) -> None:
        # Every node told at once, then waited for together, and what is left after that one
        # grace period killed at once (node by node, each waited its own grace period again:
        # about 40 s of a test module's teardown on a busy machine).
        for node in self.nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(n.session_pids() for n in self.nodes):
            time.sleep(0.2)
        for node in self.nodes:
            for pid in node.session_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(10)


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


# With the kernel's autogroup scheduling every session shares the CPUs as one: a node (its
# own session, a dozen processes) gets as much as any one process elsewhere, and on a busy
# machine its agents miss Ray's fixed 15 s to start. A benchmark (or DAULAT_TEST_RAY_NICE,
# e.g. -10, when running as root beside other suites) raises its nodes' share: the nice value
# of their sessions (sched(7), "autogroup").
_NICE = os.environ.get("DAULAT_TEST_RAY_NICE")
AUTOGROUP_NICE: int | None = int(_NICE) if _NICE else None


def set_autogroup_nice(pid: int, nice: int) -> None:
    """Set the autogroup nice value of ``pid``'s session (root may lower it below 0)."""
    Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def _own_group() -> None:
    if AUTOGROUP_NICE is not None:
        with contextlib.suppress(OSError):
            set_autogroup_nice(os.getpid(), AUTOGROUP_NICE)


def _start(args: list[str], log: Path) -> Node:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_ray_bin(), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ray_env(),
            start_new_session=True,  # its own process group: stopped as one, nothing else
            # Runs after setsid: sets the new session's own autogroup.
            preexec_fn=_own_group if AUTOGROUP_NICE is not None else None,
        )
    return Node(proc, log)


def _node_ports(ports: list[int]) -> list[str]:
    return [
        "--node-manager-port", str(ports[0]),
        "--object-manager-port", str(ports[1]),
        "--dashboard-agent-listen-port", str(ports[2]),
        "--dashboard-agent-grpc-port", str(ports[3]),
        "--metrics-export-port", str(ports[4]),
        "--runtime-env-agent-port", str(ports[5]),
    ]  # fmt: skip


# Ray gives a starting node a fixed 30 s to register with the GCS (not configurable in
# 2.60); on two cores shared with other suites that can pass, so a node is started again.
START_ATTEMPTS = 3


def _start_node(args: list[str], log: Path) -> Node:
    """Start a node and wait until it runs, again after a start that timed out."""
    for attempt in range(1, START_ATTEMPTS + 1):
        node = _start(args, log)
        try:
            _wait_started(node)
            return node
        except RuntimeError:
            node.stop()
            if attempt == START_ATTEMPTS:
                raise
            log.rename(log.with_suffix(f".failed{attempt}"))
    raise AssertionError("unreachable")


def _wait_started(node: Node) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while b"Ray runtime started" not in node.log.read_bytes():
        if node.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"a Ray test node did not start: {node.log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.2)


def _wait_for_nodes(address: str, n: int, nodes: list[Node]) -> None:
    code = (
        "import ray, time, sys\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        f"deadline = time.monotonic() + {START_TIMEOUT}\n"
        f"while len([x for x in ray.nodes() if x['Alive']]) < {n}:\n"
        "    if time.monotonic() > deadline: sys.exit(1)\n"
        "    time.sleep(0.5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=ray_env(), capture_output=True, timeout=START_TIMEOUT + 30
    )
    if done.returncode != 0:
        logs = "\n".join(n.log.read_text(errors="replace")[-2000:] for n in nodes)
        raise RuntimeError(f"the Ray test cluster did not come up: {done.stderr[-2000:]!r}\n{logs}")


@contextlib.contextmanager
def ray_cluster(worker_nodes: int = 2, cpus_per_node: int = 1) -> Iterator[RayCluster]:
    """A head and ``worker_nodes`` worker nodes, each offering ``cpus_per_node`` task slots."""
    # A short temp dir: Ray's socket paths must fit in 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="drc", dir="/tmp"))
    ports = _free_ports(1 + 7 * (worker_nodes + 1))
    gcs = ports.pop()
    address = f"127.0.0.1:{gcs}"
    common = [
        "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(cpus_per_node),
        "--object-store-memory", str(OBJECT_STORE),
        "--disable-usage-stats",
    ]  # fmt: skip
    mine = [ports.pop() for _ in range(7)]
    head = _start_node(
        [
            "--head",
            "--port", str(gcs),
            "--include-dashboard", "false",
            "--temp-dir", str(tmp),
            *common,
            *_node_ports(mine[:6]),
        ],
        tmp / "head.log",
    )  # fmt: skip
    cluster = RayCluster(address, head)
    try:
        # One node at a time: starting them together overloads two cores (a raylet then
        # times out registering).
        for i in range(worker_nodes):
            p = [ports.pop() for _ in range(7)]
            args = ["--address", address, *common, *_node_ports(p[:6])]
            cluster.workers.append(_start_node(args, tmp / f"w{i}.log"))
        _wait_for_nodes(address, 1 + worker_nodes, cluster.nodes)
        yield cluster
    finally:
        cluster.stop()
