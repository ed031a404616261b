"""The agent's main loop: register, probe peers, read counters, report, repeat.

The report is the heartbeat. A report the server refuses as out of session (it was
restarted, or another registration replaced ours) makes the agent register again; a
server that cannot be reached is retried, and the evidence gathered meanwhile goes out
with the next report that gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from agents.config import AgentConfig
from agents.exporter import AgentMetrics
from agents.pingmesh import Peer, Prober, serve
from agents.probes.counters import Counters, deltas
from agents.probes.gpu import NvmlProbe
from agents.probes.infiniband import read_ib_counters
from agents.probes.nic import read_nic_counters
from values.reports import AgentReport, ProbeResult

log = logging.getLogger("trainpool.agent")


class Refused(Exception):
    """The server refused our credentials: retrying will not help."""


class Agent:
    def __init__(
        self, cfg: AgentConfig, metrics: AgentMetrics | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics or AgentMetrics()
        self.clock = clock
        self.prober = Prober(timeout=cfg.probe_timeout)
        self.gpu = NvmlProbe(cfg.gpu)
        self.peers: list[Peer] = []
        self.session: str | None = None
        self.seq = 0
        self.probe_interval = cfg.probe_interval or 0.5
        self.report_interval = cfg.report_interval or 2.0
        self._nic: Counters = {}
        self._ib: Counters = {}
        self._unsent: list[ProbeResult] = []
        secret = cfg.secret()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.http = httpx.AsyncClient(base_url=cfg.server.rstrip("/"), headers=headers, timeout=10.0)

    async def run(self, stop: asyncio.Event) -> None:
        udp, tcp = await serve(self.cfg.bind, self.cfg.probe_port)
        await self.prober.start()
        self._nic = read_nic_counters(self.cfg.sysfs_net, self.cfg.interfaces)
        self._ib = read_ib_counters(self.cfg.sysfs_infiniband)
        log.info(
            "agent for %s probing on port %d; GPU probe: %s",
            self.cfg.node,
            self.cfg.probe_port,
            self.gpu.status,
        )
        try:
            await self._register_until(stop)
            reporter = asyncio.get_running_loop().create_task(self._report_loop(stop))
            while not stop.is_set():
                self.prober.round(self.peers)
                if self.prober.observed:
                    self.metrics.observe_probes(self.prober.observed, {p.node: p.rack for p in self.peers})
                    self.prober.observed = []
                await _sleep(stop, self.probe_interval)
            await reporter
        finally:
            self.prober.close()
            udp.close()
            tcp.close()
            await self.http.aclose()

    async def _register_until(self, stop: asyncio.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            try:
                await self.register()
                return
            except (httpx.TransportError, RetryLater) as exc:
                log.warning("cannot register with %s (%s); retrying in %.0fs", self.cfg.server, exc, delay)
            await _sleep(stop, delay)
            delay = min(delay * 2, 30.0)

    async def register(self) -> None:
        cfg = self.cfg
        body = {
            "node": cfg.node, "address": cfg.reach_address(), "probe_port": cfg.probe_port,
            "metrics_port": cfg.metrics_port or None, "flavor": cfg.flavor, "accelerators": cfg.accelerators,
            "zone": cfg.zone, "spine": cfg.spine, "rack": cfg.rack, "sent_at": self.clock(),
        }  # fmt: skip
        data = _answer(await self.http.post("/v1/agents/register", json=body))
        self.session = data["session"]
        self.seq = 0
        self.probe_interval = cfg.probe_interval or float(data["probe_interval_seconds"])
        self.report_interval = cfg.report_interval or float(data["report_interval_seconds"])
        self._set_peers(data["peers"])
        log.info("registered %s: %d peers", cfg.node, len(self.peers))

    def _set_peers(self, rows: list[dict[str, Any]]) -> None:
        self.peers = [Peer(r["node"], r["address"], int(r["port"]), r.get("rack") or "") for r in rows]

    async def _report_loop(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            await _sleep(stop, self.report_interval)
            if stop.is_set():
                return
            try:
                await self.report()
                n += 1
                if n % 5 == 0:  # peer lists rotate and grow as agents join
                    data = _answer(await self.http.get(f"/v1/agents/{self.cfg.node}/peers"))
                    self._set_peers(data["peers"])
            except Refused as exc:
                log.error("%s; stopping", exc)
                stop.set()
            except Resync:
                log.info("server asked for a new registration")
                await self._register_until(stop)
            except (httpx.TransportError, RetryLater) as exc:
                self.metrics.reports.labels("error").inc()
                log.warning("report not delivered (%s); keeping its evidence for the next one", exc)

    def build_report(self) -> AgentReport:
        nic = read_nic_counters(self.cfg.sysfs_net, self.cfg.interfaces)
        ib = read_ib_counters(self.cfg.sysfs_infiniband)
        nic_d, ib_d = deltas(self._nic, nic), deltas(self._ib, ib)
        self._nic, self._ib = nic, ib
        gpus = self.gpu.read()
        self.metrics.observe_counters(nic_d, ib_d, gpus)
        probes = _merge(self._unsent, self.prober.stats.drain())
        self.seq += 1
        return AgentReport(
            session=self.session or "", seq=self.seq, sent_at=self.clock(), interval=self.report_interval,
            probes=probes, nic=nic_d, infiniband=ib_d, gpus=gpus, gpu_probe=self.gpu.status,
        )  # fmt: skip

    async def report(self) -> None:
        rep = self.build_report()
        try:
            _answer(
                await self.http.post(f"/v1/agents/{self.cfg.node}/reports", content=rep.model_dump_json(),
                                     headers={"content-type": "application/json"})
            )  # fmt: skip
        except (httpx.TransportError, RetryLater):
            self._unsent = list(rep.probes)
            raise
        self._unsent = []
        self.metrics.reports.labels("ok").inc()


class Resync(Exception):
    pass


class RetryLater(Exception):
    pass


def _answer(resp: httpx.Response) -> Any:
    if resp.status_code in (401, 403):
        raise Refused(f"the server refused this agent's token: {_detail(resp)}")
    if resp.status_code == 409:
        raise Resync(_detail(resp))
    if resp.status_code >= 400:
        raise RetryLater(f"HTTP {resp.status_code}: {_detail(resp)}")
    return resp.json()


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except ValueError:
        return resp.text[:200]


def _merge(a: list[ProbeResult], b: list[ProbeResult]) -> list[ProbeResult]:
    """Evidence of an undelivered report joins the next one (medians: the later one's)."""
    if not a:
        return b
    out: dict[str, ProbeResult] = {p.peer: p for p in a}
    for p in b:
        old = out.get(p.peer)
        out[p.peer] = (
            p
            if old is None
            else ProbeResult(
                peer=p.peer, sent=old.sent + p.sent, lost=old.lost + p.lost,
                rtt_median=p.rtt_median if p.rtt_median is not None else old.rtt_median,
            )
        )  # fmt: skip
    return [out[k] for k in sorted(out)]


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
