"""A local Ray cluster of simulated accelerator nodes, on loopback.

One head node (no CPUs for tasks, no trainpool labels: not a pool node) and one Ray
node per pool node, declaring ``accel-<flavor>: N`` and carrying the trainpool labels
(docs/RAY.md). No GPUs are needed: the accelerators are a custom resource, and each
replica's visibility variable lists the device indices it would get.

    cluster = LocalRayCluster.from_config(config).start(progress=print)
    backend = RayBackend(cluster.address, ...)
    cluster.kill_node("h100-01")      # SIGKILL: the node crashes
    cluster.restart_node("h100-01")   # a fresh Ray node under the same name
    cluster.stop()                    # nothing is left running

``start``, ``add_node`` and ``restart_node`` must run in a thread that lives as long as
the cluster (the main thread): Ray ties its processes' lives to the starting thread,
so that they die with the process that started them even when it is SIGKILLed. The
environment Ray needs (loopback, no usage stats, fast health checks) is set in this
process's ``os.environ`` (existing values win), since Ray's processes inherit it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.backends.ray.labels import accel_resource, labels_for
from values.domain import Node

if TYPE_CHECKING:
    from scheduler.config import PoolConfig

# Why each: DESIGN.md's Ray row. The health checks make a dead node's loss visible in
# about 1.5 s instead of about 15 s. The GCS starts checking a node only after an
# initial delay (5 s by default): a node killed younger than that took 5 s to be seen
# dead (measured), so the delay is shortened too.
RAY_ENV = {
    "RAY_health_check_initial_delay_ms": "500",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local cluster could not start or change; the message says what and why."""


def use_loopback() -> None:
    """Make this process's Ray stay on 127.0.0.1. Ray reads the variable once, when it
    is imported, and otherwise rewrites a 127.0.0.1 address to the host's outward IP,
    where a loopback cluster does not listen: set it, and correct Ray if it is loaded."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def prepare_environment() -> None:
    """The variables Ray's processes must inherit, and the Python of this process first
    on PATH, so that a job's ``python`` on a node is this environment's."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    use_loopback()
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + path


class LocalRayCluster:
    def __init__(self, nodes: Sequence[Node], *, cpus_per_node: int = 1, object_store_mb: int = 80) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ClusterError("nodes: names must be unique")
        self.nodes = {n.name: n for n in nodes}
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self._temp: str | None = None
        self._head: Any = None  # ray._private.node.Node
        self._workers: dict[str, Any] = {}  # pool node name -> ray._private.node.Node
        self._dead: dict[str, str] = {}  # pool node name -> Ray node id of a killed node
        self._atexit = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_config(cls, config: PoolConfig, **kwargs: Any) -> LocalRayCluster:
        return cls(list(config.all_nodes), **kwargs)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, progress: Progress | None = None, timeout: float = 120.0) -> LocalRayCluster:
        """Start the head and every node; return once all are registered with Ray.
        Raises ClusterError (and leaves nothing running) on failure or timeout."""
        if self._head is not None:
            return self
        say = progress or (lambda _msg: None)
        prepare_environment()
        # Ray's socket paths must stay under 107 bytes: a short folder under /tmp.
        self._temp = tempfile.mkdtemp(prefix="tp-ray-", dir="/tmp")
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        self._watchdog = _start_watchdog(Path(self._temp) / "pids")
        deadline = time.monotonic() + timeout
        try:
            say("starting the Ray head node")
            self._head = self._start_node(None, head=True)
            for i, node in enumerate(self.nodes.values(), 1):
                shape = f"{node.accelerators} x {node.flavor}"
                say(f"starting Ray node {node.name} ({i}/{len(self.nodes)}: {shape})")
                self._workers[node.name] = self._start_node(node, head=False)
            self._wait_registered(list(self._workers.values()), deadline)
            self._record_pids()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, ClusterError):
                raise
            raise ClusterError(f"the local Ray cluster did not start: {exc}") from exc
        say(f"Ray cluster up at {self.address} with {len(self._workers)} nodes")
        return self

    def stop(self) -> None:
        """Kill every process of the cluster (nodes, their agents, workers and the jobs
        they run) and remove its folder. Idempotent."""
        nodes = [*self._workers.values(), *([self._head] if self._head is not None else [])]
        if nodes:
            _disconnect_driver(self.address)
        pids = [pid for n in nodes for pid in _node_pids(n)]
        tree = _with_descendants(pids)
        _sigkill(tree)
        for n in nodes:
            with contextlib.suppress(Exception):
                n.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        _reap(tree)
        self._workers.clear()
        self._head = None
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()  # it wakes, finds nothing alive, exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(5)
            self._watchdog = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests and the demo do to it ----------------------------------------------
    @property
    def address(self) -> str:
        """The GCS address to connect to (``ray.init(address=...)``, ``--address``)."""
        if self._head is None:
            raise ClusterError("the cluster is not started")
        return str(self._head.gcs_address)

    @property
    def node_ids(self) -> dict[str, str]:
        """Ray node id of every running pool node, by pool node name."""
        return {name: str(n.node_id) for name, n in self._workers.items()}

    def kill_node(self, name: str) -> float:
        """Crash a node: SIGKILL its raylet and, at the same instant, everything the
        raylet started (agents, actor workers and the jobs they run), as a machine that
        loses power would. Ray is not told; it finds out through its health checks.
        Returns the time.time() of the kill."""
        node = self._workers.get(name)
        if node is None:
            raise ClusterError(f"node '{name}' is not running in this cluster")
        raylet = _node_pids(node)
        tree = _with_descendants(raylet)  # collected first: orphans lose their parent link
        at = time.time()
        _sigkill(raylet)
        _sigkill(tree)
        with contextlib.suppress(Exception):
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        _reap(tree)
        self._dead[name] = str(node.node_id)
        del self._workers[name]
        return at

    def add_node(self, node: Node, timeout: float = 60.0) -> str:
        """Start one more pool node; returns its Ray node id once it is registered."""
        if self._head is None:
            raise ClusterError("the cluster is not started")
        if node.name in self._workers:
            raise ClusterError(f"node '{node.name}' is already running")
        self.nodes[node.name] = node
        ray_node = self._start_node(node, head=False)
        self._workers[node.name] = ray_node
        self._wait_registered([ray_node], time.monotonic() + timeout)
        self._record_pids()
        return str(ray_node.node_id)

    def restart_node(self, name: str, timeout: float = 60.0) -> str:
        """A killed (or running) node comes back as a new Ray node with the same labels."""
        if name not in self.nodes:
            raise ClusterError(f"node '{name}' is not a node of this cluster")
        if name in self._workers:
            self.kill_node(name)
        return self.add_node(self.nodes[name], timeout)

    def pids(self) -> list[int]:
        """Every live process of the cluster (for leak checks)."""
        nodes = [*self._workers.values(), *([self._head] if self._head is not None else [])]
        return sorted(_with_descendants(pid for n in nodes for pid in _node_pids(n)))

    # --- internals -------------------------------------------------------------------
    def _start_node(self, node: Node | None, head: bool) -> Any:
        import ray._private.node
        from ray._private.parameter import RayParams

        common: dict[str, Any] = {
            "temp_dir": self._temp,
            "num_gpus": 0,
            "object_store_memory": self.object_store_mb * 1024 * 1024,
            "min_worker_port": 0,
            "max_worker_port": 0,
            "node_ip_address": "127.0.0.1",
        }
        if head:
            params = RayParams(num_cpus=0, include_dashboard=False, **common)
        else:
            assert node is not None
            resources = {accel_resource(node.flavor): float(node.accelerators)} if node.accelerators else {}
            params = RayParams(
                num_cpus=self.cpus_per_node,
                resources=resources,
                labels=labels_for(node),
                gcs_address=self.address,
                include_log_monitor=False,  # type: ignore[arg-type]
                node_manager_port=0,
                **common,
            )
            params.dashboard_agent_listen_port = None  # any free port: several nodes share the host
        return ray._private.node.Node(params, head=head, shutdown_at_exit=False, spawn_reaper=True)

    def _record_pids(self) -> None:
        """Tell the watchdog what to kill should this process die without stop()."""
        if self._temp is None:
            return
        lines = [f"{pid} {_start_time(pid)}" for pid in self.pids()]
        tmp = Path(self._temp) / "pids.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, Path(self._temp) / "pids")

    def _wait_registered(self, nodes: list[Any], deadline: float) -> None:
        from ray._private.state import GlobalState
        from ray._raylet import GcsClientOptions  # type: ignore[attr-defined]

        state = GlobalState()
        state._initialize_global_state(
            GcsClientOptions.create(
                self.address, None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False
            )
        )
        want = {str(n.node_id) for n in nodes}
        try:
            while True:
                alive = {str(r["NodeID"]) for r in state.node_table() if r.get("Alive")}
                if want <= alive:
                    return
                if time.monotonic() > deadline:
                    names = [k for k, v in self._workers.items() if str(v.node_id) in want - alive]
                    raise ClusterError(f"Ray nodes did not register in time: {', '.join(names) or 'head'}")
                time.sleep(0.1)
        finally:
            state.disconnect()


# --- processes -----------------------------------------------------------------------

# Ray's node processes die with the process that started them (it ties them to it),
# but the agents each raylet starts do not: once the GCS is gone they hang for good.
# This process outlives us and kills what the pid file lists (checking each process's
# start time, so a reused pid is left alone), then removes the cluster's folder, when
# our end of its stdin closes.
_WATCHDOG = """
import os, shutil, signal, sys
sys.stdin.buffer.read()
def start_time(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]
try:
    lines = open(sys.argv[1]).read().split()
except OSError:
    lines = []
for pid, started in zip(lines[::2], lines[1::2]):
    if start_time(int(pid)) == started:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
shutil.rmtree(os.path.dirname(sys.argv[1]), ignore_errors=True)
"""


def _start_watchdog(pidfile: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(pidfile)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to our process group must not reach it
    )  # fmt: skip


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _node_pids(node: Any) -> list[int]:
    pids = []
    for infos in getattr(node, "all_processes", {}).values():
        for info in infos:
            proc = getattr(info, "process", None)
            if proc is not None and proc.poll() is None:
                pids.append(int(proc.pid))
    return pids


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses; fields after
        # the last ')' are fixed: state, ppid, ...
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _with_descendants(pids: Iterable[int]) -> set[int]:
    children = _children_map()
    found: set[int] = set()
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return found


def _sigkill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _reap(pids: Iterable[int], timeout: float = 5.0) -> None:
    """Wait until the killed processes are gone (zombies count as gone) and collect
    those that are our own children."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not process_alive(pid):
                break
            time.sleep(0.02)


def process_alive(pid: int) -> bool:
    """Running, not a zombie (a killed child not yet reaped is gone for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def _disconnect_driver(address: str) -> None:
    """A driver of this process connected to the cluster would hang once its GCS is
    gone: disconnect it first."""
    try:
        import ray

        if ray.is_initialized() and ray.get_runtime_context().gcs_address == address:
            ray.shutdown()
    except Exception:  # stopping must not fail on a half-broken connection
        pass
