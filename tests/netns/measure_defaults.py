"""Detection times with the server's default thresholds (not a test; a measurement).

    sudo .venv/bin/python tests/netns/measure_defaults.py [repeats]

Builds the same six-host lab as the tests, with no health settings (the defaults of
scheduler/health/thresholds.py), and times 5 % loss and +20 ms on one node to its
degraded verdict, each fault removed and the pool back to healthy between runs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netns.lab import Lab, cleanup_all


def until(cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.25)
    return float("nan")


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cleanup_all()
    lab = Lab(Path(tempfile.mkdtemp(prefix="tp-measure-")))
    out: dict[str, list[float]] = {"node 5% loss": [], "node +20 ms": []}
    try:
        lab.build()
        lab.start_server()
        for h in lab.hosts:
            lab.start_agent(h.name)
        time.sleep(30)  # agents register, baselines form
        for i in range(repeats):
            node = lab.hosts[(2 * i) % len(lab.hosts)].name
            until(lambda: set(lab.states().values()) == {"healthy"}, 180)
            lab.lossy_node(node, 0.05)
            out["node 5% loss"].append(round(until(lambda n=node: lab.states()[n] != "healthy", 120), 1))
            lab.flush(lab.host(node).ns)
            until(lambda: set(lab.states().values()) == {"healthy"}, 180)
            proc = lab.delayed_node(node, 20)
            out["node +20 ms"].append(round(until(lambda n=node: lab.states()[n] != "healthy", 120), 1))
            lab.flush(lab.host(node).ns)
            proc.terminate()
            proc.wait()
        others = [e for e in lab.events() if e["kind"] == "node" and e["state"] != "healthy"]
        out["verdicts"] = [f"{e['subject']}: {e['message'][:80]}" for e in others]  # type: ignore[assignment]
    finally:
        lab.teardown()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
