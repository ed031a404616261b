"""What the server keeps does not grow with the jobs it has seen: once warm, more jobs
through the API and the control loop leave the Python heap where it was. (A cache of
every spec ever parsed once grew by each job; the 30-minute soak in docs/RELIABILITY.md
measures the whole process, this test the part a change is likely to break.)"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from service.api_harness import Api, make_api

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}


def _round(api: Api, tag: str, jobs: int = 64) -> None:
    """``jobs`` distinct specs submitted, run to the end, listed and scraped."""
    ids = [
        api.submit("member@a", name=f"{tag}-{i}", gang={"flavor": "h100", "accelerators": 2},
                   env={"SIM_DURATION": "5", "STEP": f"{tag}/{i}"})["id"]
        for i in range(jobs)
    ]  # fmt: skip
    for _ in range(40):
        api.cycle(6)
        states = {api.call("member@a", "GET", f"/v1/jobs/{i}").json()["state"] for i in ids}
        if states <= TERMINAL:
            break
    assert states == {"SUCCEEDED"}
    assert api.call("member@a", "GET", "/v1/jobs", limit=500).status_code == 200
    assert api.call("pool-admin", "GET", "/metrics").status_code == 200


@pytest.mark.slow
def test_the_heap_does_not_grow_with_the_jobs_seen(tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    tracemalloc.start()
    try:
        _round(api, "warm")  # caches of bounded size fill here
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        for n in range(3):
            _round(api, f"more{n}")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    # 192 more jobs: a few KiB each if anything per job were kept (a parsed spec alone is ~4 KiB).
    assert grown < 256 * 1024, f"the heap grew {grown / 1024:.0f} KiB over 192 jobs"
