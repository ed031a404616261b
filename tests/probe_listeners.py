"""Agents' probe listeners (the agent's own UDP echo and TCP listener) on loopback, served
from a thread's event loop, for tests that need peers to probe."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

from agents.pingmesh import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def probe_listeners(n: int) -> Iterator[list[int]]:
    """``n`` probe ports answering on 127.0.0.1 while the block runs."""
    loop = asyncio.new_event_loop()
    ports = [free_port() for _ in range(n)]

    async def main() -> None:
        for port in ports:
            await serve("127.0.0.1", port)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(main(), loop).result(timeout=5)
        yield ports
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
