"""A small data centre in network namespaces: hosts in racks behind a spine router, a
trainpool server on the host side, one agent per host, and real faults.

    root ns:  server on 10.231.250.1  --uplink--  spine ns (router)
    spine ns: one leg per rack, 10.231.<rack+1>.1, into that rack's bridge (root ns)
    host ns:  eth0 10.231.<rack+1>.<10+i> on its rack's bridge, default route via the spine

Everything made carries the run's prefix (``tpn`` + 3 hex digits), so ``cleanup_all``
removes what a crashed run left behind. Removing a namespace removes its interfaces and
iptables rules with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MARK = "tpn"
ADMIN = "tp_netns-test-admin-token"
UPLINK_ROOT, UPLINK_SPINE = "10.231.250.1", "10.231.250.2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def cleanup_all(prefix: str = MARK) -> None:
    """Remove every namespace and link whose name starts with ``prefix`` (and their processes)."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(r"\d+: ([^:@]+)", line)
        if m and m.group(1).startswith(prefix):
            sh("ip", "link", "del", m.group(1), check=False)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One lab at a time on a machine (pytest -n workers, other checkouts): labs share the
    address range, the host route and the leftover clean-up."""
    with open(Path(tempfile.gettempdir()) / "trainpool-netns.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@dataclass
class Host:
    name: str  # node name in the pool
    ns: str
    rack: int
    ip: str
    agent: subprocess.Popen[bytes] | None = None
    token: str = ""


@dataclass
class Lab:
    workdir: Path
    racks: int = 3
    per_rack: int = 2
    health: dict[str, Any] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: MARK + secrets.token_hex(2)[:3])
    hosts: list[Host] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None
    port: int = 18642
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # The server runs in the root namespace, or beside a Ray head in the spine's.
    server_host: str = UPLINK_ROOT
    server_ns: str | None = None
    server_args: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)  # removed at teardown

    # --- the network -------------------------------------------------------------------

    @property
    def spine(self) -> str:
        return f"{self.prefix}-sp"

    def build(self) -> None:
        p = self.prefix
        sh("ip", "netns", "add", self.spine)
        self._ns(self.spine, "ip", "link", "set", "lo", "up")
        self._ns(self.spine, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "link", "add", f"{p}up", "type", "veth", "peer", "name", f"{p}upp")
        sh("ip", "link", "set", f"{p}upp", "netns", self.spine)
        sh("ip", "addr", "add", f"{UPLINK_ROOT}/24", "dev", f"{p}up")
        sh("ip", "link", "set", f"{p}up", "up")
        self._ns(self.spine, "ip", "addr", "add", f"{UPLINK_SPINE}/24", "dev", f"{p}upp")
        self._ns(self.spine, "ip", "link", "set", f"{p}upp", "up")
        sh("ip", "route", "add", "10.231.0.0/16", "via", UPLINK_SPINE, "dev", f"{p}up")
        for r in range(self.racks):
            bridge = f"{p}b{r}"
            sh("ip", "link", "add", bridge, "type", "bridge")
            sh("ip", "link", "set", bridge, "up")
            sh("ip", "link", "add", f"{p}s{r}", "type", "veth", "peer", "name", f"{p}s{r}p")
            sh("ip", "link", "set", f"{p}s{r}", "master", bridge, "up")
            sh("ip", "link", "set", f"{p}s{r}p", "netns", self.spine)
            self._ns(self.spine, "ip", "addr", "add", f"10.231.{r + 1}.1/24", "dev", f"{p}s{r}p")
            self._ns(self.spine, "ip", "link", "set", f"{p}s{r}p", "up")
            for i in range(self.per_rack):
                n = r * self.per_rack + i
                host = Host(name=f"h-{n:02d}", ns=f"{p}-h{n}", rack=r, ip=f"10.231.{r + 1}.{10 + i}")
                sh("ip", "netns", "add", host.ns)
                sh("ip", "link", "add", f"{p}h{n}", "type", "veth", "peer", "name", f"{p}h{n}p")
                sh("ip", "link", "set", f"{p}h{n}", "master", bridge, "up")
                sh("ip", "link", "set", f"{p}h{n}p", "netns", host.ns)
                self._ns(host.ns, "ip", "link", "set", f"{p}h{n}p", "name", "eth0")
                self._ns(host.ns, "ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
                self._ns(host.ns, "ip", "link", "set", "eth0", "up")
                self._ns(host.ns, "ip", "link", "set", "lo", "up")
                self._ns(host.ns, "ip", "route", "add", "default", "via", f"10.231.{r + 1}.1")
                self.hosts.append(host)

    def _ns(self, ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def rack_name(self, r: int) -> str:
        return f"h-s0-r{r}"

    # --- faults ----------------------------------------------------------------------------

    def iptables(self, ns: str, *rule: str) -> None:
        self._ns(ns, "iptables", "-w", *rule)

    def flush(self, ns: str) -> None:
        self._ns(ns, "iptables", "-w", "-F")

    def lossy_node(self, name: str, p: float) -> None:
        """Loss on everything the host receives (its NIC, as seen from inside)."""
        self.iptables(self.host(name).ns, "-A", "INPUT", "-m", "statistic", "--mode", "random",
                      "--probability", str(p), "-j", "DROP")  # fmt: skip

    def lossy_rack(self, r: int, p: float) -> None:
        """Loss on the rack's uplink at the spine: every link into the rack, both ways."""
        for direction in ("-i", "-o"):
            self.iptables(self.spine, "-A", "FORWARD", direction, f"{self.prefix}s{r}p", "-m", "statistic",
                          "--mode", "random", "--probability", str(p), "-j", "DROP")  # fmt: skip

    def lossy_link(self, a: str, b: str, p: float) -> None:
        """Loss between two hosts only (rules in ``a``, both directions)."""
        ns, peer = self.host(a).ns, self.host(b).ip
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            self.iptables(ns, "-A", chain, flag, peer, "-m", "statistic", "--mode", "random",
                          "--probability", str(p), "-j", "DROP")  # fmt: skip

    def delayed_node(self, name: str, ms: float) -> subprocess.Popen[bytes]:
        """Every packet the host sends waits ``ms`` in an NFQUEUE program."""
        host = self.host(name)
        program = [PY, str(Path(__file__).parent / "delay.py"), "--queue", "7", "--ms", str(ms)]
        proc = self._spawn(host.ns, program, f"delay-{name}")
        time.sleep(1.0)
        self.iptables(host.ns, "-A", "OUTPUT", "-j", "NFQUEUE", "--queue-num", "7", "--queue-bypass")
        return proc

    # --- processes --------------------------------------------------------------------------

    def _spawn(
        self, ns: str | None, cmd: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else cmd
        out = open(self.workdir / f"{log}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=ROOT)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start_server(self) -> None:
        pool = self.workdir / "pool.yaml"
        pool.write_text(
            "name: netns\nflavors: [{name: h100}]\n"
            f"node_groups: [{{flavor: h100, count: {len(self.hosts)}, accelerators: 8,"
            f" racks_per_spine: {self.racks}, name_prefix: h}}]\n"
            "orgs: [{name: a, quotas: {h100: {nominal: 48}}}]\n"
        )
        (self.workdir / "health.json").write_text(json.dumps(self.health))
        env = {"TRAINPOOL_ADMIN_TOKEN": ADMIN, "TRAINPOOL_HEALTH_CONFIG": str(self.workdir / "health.json"),
               "XDG_DATA_HOME": str(self.workdir)}  # fmt: skip
        db = str(self.workdir / "pool.db")
        cmd = [PY, "-m", "scheduler.cli.main", "server", "--db", db, "--pool", str(pool),
               "--host", self.server_host, "--port", str(self.port), "--interval", "0.5",
               "--sim-duration", "3600", "--sim-state", str(self.workdir / "sim.json"),
               *self.server_args]  # fmt: skip
        self.server = self._spawn(self.server_ns, cmd, "server", env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"server not ready; see {self.workdir}/server.log")

    @property
    def url(self) -> str:
        return f"http://{self.server_host}:{self.port}"

    def api(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> Any:
        auth = {"Authorization": f"Bearer {token}"}
        resp = httpx.request(method, f"{self.url}{path}", json=body, headers=auth, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def api_text(self, path: str) -> str:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).text

    def start_agent(self, name: str) -> None:
        host = self.host(name)
        if not host.token:
            host.token = self.api("POST", "/v1/agents/tokens", {"node": name, "name": "netns"})["secret"]
        cmd = [PY, "-m", "agents", "--server", self.url, "--node", name, "--address", host.ip,
               "--probe-port", "8643", "--metrics-port", "9643", "--no-gpu"]  # fmt: skip
        host.agent = self._spawn(host.ns, cmd, f"agent-{name}", {"TRAINPOOL_AGENT_TOKEN": host.token})

    def kill_agent(self, name: str) -> None:
        proc = self.host(name).agent
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def teardown(self) -> None:
        try:
            self.stop_all()
        finally:
            cleanup_all(self.prefix)
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)

    # --- what the server says ------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        return {n["name"]: n["health"] for n in self.api("GET", "/v1/nodes")}

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/v1/agents/events?after={after}&limit=1000"))

    def last_event_id(self) -> int:
        evs = self.events()
        while len(evs) == 1000:
            evs = self.events(evs[-1]["id"])
        return int(evs[-1]["id"]) if evs else 0
