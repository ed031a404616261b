"""Delay every packet queued to NFQUEUE ``--queue N`` by ``--ms`` milliseconds.

Run inside a namespace whose iptables sends packets to the queue (``-j NFQUEUE
--queue-num N --queue-bypass``: if this program dies, packets pass undelayed rather
than being dropped). This kernel has no ``tc netem``; this is the delay the tests use.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import signal
import sys
import threading
import time
from typing import Any

from netfilterqueue import NetfilterQueue


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--ms", type=float, required=True)
    args = ap.parse_args()
    delay = args.ms / 1000
    heap: list[tuple[float, int, Any]] = []
    order = itertools.count()
    ready = threading.Condition()

    def release() -> None:
        # One thread holds the packets in a heap by due time (a timer per packet would be
        # a thread per packet).
        while True:
            with ready:
                while not heap or heap[0][0] > time.monotonic():
                    ready.wait(None if not heap else max(0.0, heap[0][0] - time.monotonic()))
                _, _, pkt = heapq.heappop(heap)
            pkt.accept()

    def queued(pkt: Any) -> None:
        with ready:
            heapq.heappush(heap, (time.monotonic() + delay, next(order), pkt))
            ready.notify()

    threading.Thread(target=release, daemon=True).start()
    nfq = NetfilterQueue()
    nfq.bind(args.queue, queued)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("delaying", flush=True)
    try:
        nfq.run()
    finally:
        nfq.unbind()


if __name__ == "__main__":
    main()
