"""The composition root for real: the loop in its own process (the server's default) or
in a thread, woken by the API across the boundary, its metrics and status served by the
API, the lease handed over on stop, and no loop left behind when the server dies."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service.conftest import free_port  # tests/ is on sys.path (rootdir conftest)
from service.server_proc import ADMIN, ServerProc

from scheduler.control.loop_place import LoopPlace
from scheduler.control.loop_process import LoopStartError
from scheduler.control.options import ServerOptions
from scheduler.control.root import Root
from scheduler.control.wake import Pace

# Long enough that only a wake explains a cycle within the test's few seconds.
SLOW = Pace(interval=60.0, batch_delay=0.01, min_gap=0.05)
POOL = """
name: root
flavors: [{name: h100}]
node_groups: [{flavor: h100, count: 2, accelerators: 8, racks_per_spine: 1, name_prefix: h100}]
orgs: [{name: a, quotas: {h100: {nominal: 16}}}]
"""


def options(tmp_path: Path, place: LoopPlace, **extra: object) -> ServerOptions:
    (tmp_path / "pool.yaml").write_text(POOL)
    return ServerOptions(
        db=str(tmp_path / "pool.db"), pool=str(tmp_path / "pool.yaml"), sim_state=str(tmp_path / "sim.json"),
        admin_token=ADMIN, pace=SLOW, loop=place, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(params=[LoopPlace.PROCESS, LoopPlace.THREAD])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Root, httpx.Client]]:
    root = Root(options(tmp_path, request.param), say=lambda _line: None)
    port = free_port()
    root.serve_in_thread("127.0.0.1", port)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    try:
        yield root, http
    finally:
        root.stop()


def wait_for(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def lease_expiry(tmp_path: Path) -> float:
    with sqlite3.connect(tmp_path / "pool.db") as conn:
        return float(conn.execute("SELECT expires_at FROM leases").fetchone()[0])


def test_a_submission_wakes_the_loop_long_before_its_interval(served: tuple[Root, httpx.Client]) -> None:
    _, http = served
    wait_for("leading", lambda: http.get("/readyz").json()["leader"])
    spec = {"name": "w", "org": "a", "gang": {"flavor": "h100", "accelerators": 8}}
    job = http.post("/v1/jobs", json={"spec": spec}).json()
    wait_for("placed", lambda: http.get(f"/v1/jobs/{job['id']}").json()["state"] != "PENDING", 10)
    logs = http.get(f"/v1/jobs/{job['id']}/logs").json()["lines"]  # from the loop's backend
    assert logs and "launched on h100-0" in logs[0]


def test_the_api_serves_the_loops_metrics_beside_its_own(served: tuple[Root, httpx.Client]) -> None:
    _, http = served
    wait_for("leading", lambda: http.get("/readyz").json()["leader"])
    text = http.get("/metrics").text
    assert "trainpool_leader 1.0" in text
    assert 'trainpool_api_request_seconds_count{method="GET",route="/readyz",status="2xx"}' in text
    types = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_stopping_hands_the_lease_over_and_ends_the_loop(tmp_path: Path) -> None:
    root = Root(options(tmp_path, LoopPlace.PROCESS), say=lambda _line: None)
    root.start()
    assert root.ctx is not None and root.ctx.loop is not None
    wait_for("leading", lambda: root.ctx.loop.status().leader)
    process = root.ctx.loop.process  # type: ignore[attr-defined]
    root.stop()
    assert not process.is_alive() and process.exitcode == 0
    assert lease_expiry(tmp_path) == 0.0, "a follower would wait out the lease"


def test_a_loop_that_cannot_start_stops_the_server_with_its_reason(tmp_path: Path) -> None:
    root = Root(options(tmp_path, LoopPlace.PROCESS, backend="nope"), say=lambda _line: None)
    with pytest.raises(LoopStartError, match="'nope' is not a backend"):
        root.start()


# --- the server as a process: what signals do -------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def loop_pid(server: ServerProc) -> int:
    assert server.proc is not None
    spawned = [c for c in children(server.proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(spawned) == 1, "one loop process"
    return spawned[0]


def test_sigterm_stops_the_server_and_hands_the_lease_over(tmp_path: Path) -> None:
    server = ServerProc(f"sqlite:///{tmp_path / 'pool.db'}", tmp_path)
    server.start()
    loop = loop_pid(server)
    wait_for("leading", lambda: server.ready()["leader"])
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 128 + signal.SIGTERM
    wait_for("loop gone", lambda: not alive(loop), 10)
    assert lease_expiry(tmp_path) == 0.0


def test_a_killed_server_leaves_no_loop_behind(tmp_path: Path) -> None:
    server = ServerProc(f"sqlite:///{tmp_path / 'pool.db'}", tmp_path)
    server.start()
    loop = loop_pid(server)
    assert alive(loop)
    server.kill()  # SIGKILL: nothing of the server runs any more
    wait_for("loop gone", lambda: not alive(loop), 10)


def _bad_token_statuses(port: int, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        return [
            http.get(
                "/v1/whoami", headers={"Authorization": f"Bearer tp_guess-{i}", "X-Forwarded-For": ip}
            ).status_code
            for i, ip in enumerate(forwarded_for)
        ]


@pytest.mark.parametrize("trusted", [(), ("127.0.0.1",)])
def test_the_throttle_believes_forwarded_addresses_only_from_trusted_proxies(
    tmp_path: Path, trusted: tuple[str, ...]
) -> None:
    root = Root(options(tmp_path, LoopPlace.THREAD, trusted_proxies=trusted), say=lambda _line: None)
    port = free_port()
    root.serve_in_thread("127.0.0.1", port)
    try:
        # Twenty failures, each claiming a new address, then a twenty-first claiming another.
        codes = _bad_token_statuses(port, [f"10.0.0.{i}" for i in range(21)])
        if not trusted:  # a local process cannot pose as other clients: all twenty-one are 127.0.0.1's
            assert codes == [401] * 20 + [429]
        else:  # behind a trusted proxy each forwarded address is its own client
            assert codes == [401] * 21
            assert _bad_token_statuses(port, ["10.0.0.7"] * 20)[-1] == 429
            assert _bad_token_statuses(port, ["10.0.0.99"]) == [401]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            good = http.get(
                "/v1/whoami", headers={"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "10.0.0.7"}
            )
        assert good.status_code == 200, "a valid token is served from a throttled address"
    finally:
        root.stop()
