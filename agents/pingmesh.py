"""Pingmesh probes: a UDP echo and a TCP listener on the agent's port, and a prober that
measures RTT and loss to each peer with both.

UDP: a probe carries a sequence number; it is lost only if no echo came back within the
timeout. An agent that stalls (a busy CPU) reads its echoes late but still reads them:
stalls inflate RTTs (medians absorb that), they do not fake loss.
TCP: a connect to the peer's port; the RTT and the retransmission count are the
kernel's (``TCP_INFO``), so they do not depend on this process being scheduled either.
A connect that needed a SYN retransmission counts as a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median

from values.reports import ProbeResult

MAGIC = b"TPPM"
_PROBE = struct.Struct("!4sQ")  # magic, sequence number
MAX_RTT_SAMPLES = 4096  # per peer per report interval; the median needs no more


@dataclass(frozen=True)
class Peer:
    node: str
    address: str
    port: int
    rack: str = ""


@dataclass
class PeerStats:
    """Results per peer since the last report; ``drain`` summarises and resets."""

    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lost: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rtts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def ok(self, peer: str, rtt: float) -> None:
        self.sent[peer] += 1
        if len(self.rtts[peer]) < MAX_RTT_SAMPLES:
            self.rtts[peer].append(rtt)

    def loss(self, peer: str) -> None:
        self.sent[peer] += 1
        self.lost[peer] += 1

    def drain(self) -> list[ProbeResult]:
        out = [
            ProbeResult(
                peer=peer,
                sent=n,
                lost=self.lost.get(peer, 0),
                rtt_median=median(self.rtts[peer]) if self.rtts.get(peer) else None,
            )
            for peer, n in sorted(self.sent.items())
            if n
        ]
        self.sent.clear()
        self.lost.clear()
        self.rtts.clear()
        return out


def parse_tcp_info(raw: bytes) -> tuple[int, float]:
    """(total retransmissions, smoothed RTT in seconds) from Linux ``struct tcp_info``.

    Layout (include/uapi/linux/tcp.h): eight one-byte fields, then 32-bit fields of which
    ``tcpi_rtt`` (microseconds) is the 16th and ``tcpi_total_retrans`` the 24th.
    """
    if len(raw) < 104:
        raise ValueError(f"tcp_info: {len(raw)} bytes, need at least 104")
    fields = struct.unpack_from("=24I", raw, 8)
    return fields[23], fields[15] / 1e6


class _Echo(asyncio.DatagramProtocol):
    """Answers probes with the same bytes (no amplification), ignores anything else."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) == _PROBE.size and data[:4] == MAGIC and self.transport is not None:
            self.transport.sendto(data, addr)


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, prober: Prober) -> None:
        self.prober = prober

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) == _PROBE.size and data[:4] == MAGIC:
            self.prober._reply(_PROBE.unpack(data)[1], time.perf_counter())


async def serve(bind: str, port: int) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
    """The probe responders: UDP echo and a TCP listener that closes what it accepts."""
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(bind, port))

    async def _close(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    tcp = await asyncio.start_server(_close, bind, port, reuse_address=True, backlog=1024)
    return udp, tcp


class Prober:
    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.stats = PeerStats()
        self._seq = 0
        self._pending: dict[int, tuple[str, float]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.observed: list[tuple[str, float | None]] = []  # (peer, rtt or None for a loss), for metrics

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Replies(self), family=socket.AF_INET)

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for t in self._tasks:
            t.cancel()

    def round(self, peers: Iterable[Peer]) -> None:
        """One UDP probe and one TCP connect to each peer; results arrive asynchronously."""
        now = time.perf_counter()
        self._expire(now)
        for peer in peers:
            self._seq += 1
            self._pending[self._seq] = (peer.node, now)
            if self._udp is not None:
                # Unreachable right now: the probe expires as a loss.
                with contextlib.suppress(OSError):
                    self._udp.sendto(_PROBE.pack(MAGIC, self._seq), (peer.address, peer.port))
            task = asyncio.get_running_loop().create_task(self._tcp(peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _reply(self, seq: int, at: float) -> None:
        sent = self._pending.pop(seq, None)
        if sent is not None:
            self._ok(sent[0], at - sent[1])

    def _expire(self, now: float) -> None:
        for seq in [s for s, (_, t) in self._pending.items() if now - t > self.timeout]:
            peer, _ = self._pending.pop(seq)
            self._loss(peer)

    def _ok(self, peer: str, rtt: float) -> None:
        self.stats.ok(peer, rtt)
        self.observed.append((peer, rtt))

    def _loss(self, peer: str) -> None:
        self.stats.loss(peer)
        self.observed.append((peer, None))

    async def _tcp(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # Close with a reset: thousands of probes must not leave sockets in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (peer.address, peer.port)), self.timeout)
            retrans, rtt = parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
        except (OSError, TimeoutError):
            self._loss(peer.node)
            return
        finally:
            sock.close()
        if retrans:
            self._loss(peer.node)
        else:
            self._ok(peer.node, rtt)
