"""Failures blamed on nodes: a node that fails two different jobs is quarantined."""

from __future__ import annotations

from dataclasses import replace

from sqlmodel import select

from scheduler.backends.base import GangStatus, Phase
from scheduler.backends.sim import SimBackend
from scheduler.checkpoint_folder import DEFAULT_ROOT, job_folder
from scheduler.failures import BLAMED, blamed_node
from scheduler.quarantine import Blame, QuarantineRule, to_quarantine
from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store.tables import CheckpointRow
from scheduler.store.view import assignments_of
from values.domain import Health
from values.lifecycle import JobState

from .harness import Pool, nodes

FAIL = {"SIM_EXIT_CODE": 139, "SIM_DURATION": 10}  # SIGSEGV: a crash, maybe the node's doing


def placed_on(pool: Pool, job_id: str) -> list[str]:
    with pool.db.read() as s:
        job = jobstore.get(s, job_id)
        alloc = jobstore.allocation(s, job_id, job.attempt)
        assert alloc is not None, f"{job_id} has no allocation"
        return [node for node, _ in assignments_of(alloc)]


def test_rule_counts_distinct_jobs_within_the_window() -> None:
    rule = QuarantineRule(window_seconds=100, distinct_jobs=2)
    same_job_twice = [Blame("n1", "j1", 10), Blame("n1", "j1", 20)]
    assert to_quarantine(rule, same_job_twice, now=50) == []
    two_jobs = [Blame("n1", "j1", 10), Blame("n1", "j2", 20), Blame("n2", "j3", 20)]
    assert to_quarantine(rule, two_jobs, now=50) == ["n1"]
    assert to_quarantine(rule, two_jobs, now=115) == [], "the first blame has left the window"


def test_node_failing_two_jobs_is_cordoned_and_audited(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2))
    first = pool.submit("a", env=FAIL, restart={"max_restarts": 0})
    pool.cycle()
    pool.cycle(advance=11)  # exits 1 on h100-00
    assert pool.state(first) is JobState.FAILED
    with pool.db.read() as s:
        assert not nodestore.get_node(s, "h100-00").cordoned, "one job's failure says little about a node"
    second = pool.submit("b", env=FAIL, restart={"max_restarts": 0})
    pool.cycle()
    assert placed_on(pool, second) == ["h100-00"]
    pool.cycle(advance=11)
    with pool.db.read() as s:
        assert nodestore.get_node(s, "h100-00").cordoned
        assert not nodestore.get_node(s, "h100-01").cordoned
        assert nodestore.quarantined(s) == ["h100-00"]
        actions = [r.action for r in orgstore.audit_log(s) if r.target == "h100-00"]
    assert actions.count(BLAMED) == 2 and "node.quarantined" in actions
    third = pool.submit("a")
    pool.cycle()
    assert placed_on(pool, third) == ["h100-01"], "nothing new lands on a quarantined node"


def test_plain_non_zero_exits_never_blame_a_node(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(1))
    for org in ("a", "b", "a", "b"):
        job = pool.submit(org, env={"SIM_EXIT_CODE": 1, "SIM_DURATION": 10}, restart={"max_restarts": 0})
        pool.cycle()
        pool.cycle(advance=11)
        assert pool.state(job) is JobState.FAILED
    with pool.db.read() as s:
        assert not nodestore.get_node(s, "h100-00").cordoned
        assert BLAMED not in [r.action for r in orgstore.audit_log(s)]


def test_operator_uncordon_ends_the_quarantine(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(1))
    for org in ("a", "b"):
        job = pool.submit(org, env=FAIL, restart={"max_restarts": 0})
        pool.cycle()
        pool.cycle(advance=11)
        assert pool.state(job) is JobState.FAILED
    with pool.db.write() as s:
        assert nodestore.quarantined(s) == ["h100-00"]
        nodestore.set_cordon(s, nodestore.get_node(s, "h100-00"), False, pool.clock())
        orgstore.audit(s, pool.clock(), "admin", "node.uncordon", "h100-00")
    with pool.db.read() as s:
        assert nodestore.quarantined(s) == []


def test_node_that_died_is_not_blamed_for_its_jobs(db_url: str) -> None:
    """A crash kills every job on the node at once; that alone must not quarantine it."""
    backend = SimBackend(nodes(2), default_duration=100.0)
    pool = Pool(db_url, backend=backend)
    jobs = [pool.submit(org, accelerators=4) for org in ("a", "b")]
    pool.cycle()
    assert all(pool.state(j) is JobState.STARTING for j in jobs)
    backend.set_health("h100-00", Health.UNHEALTHY, pool.clock())
    pool.cycle(advance=1)
    with pool.db.read() as s:
        assert not nodestore.get_node(s, "h100-00").cordoned
        assert BLAMED not in [r.action for r in orgstore.audit_log(s)]


class ReportingBackend(SimBackend):
    """The sim backend, plus the checkpoint a real backend would read from rank 0's folder:
    (step, file name in the job's folder)."""

    checkpoint: tuple[int, str] | None = None

    def gangs(self, now: float) -> list[GangStatus]:
        return [replace(g, checkpoint=self._manifest(g.job_id)) for g in super().gangs(now)]

    def _manifest(self, job_id: str) -> tuple[int, str] | None:
        if self.checkpoint is None:
            return None
        return self.checkpoint[0], f"{job_folder(DEFAULT_ROOT, job_id)}/{self.checkpoint[1]}"


def test_restart_resumes_from_the_checkpoint_the_backend_saw(db_url: str) -> None:
    backend = ReportingBackend(nodes(2), default_duration=100.0)
    pool = Pool(db_url, backend=backend)
    job = pool.submit("a")
    pool.cycle()
    backend.checkpoint = (40, "step-40.pt")
    pool.cycle(advance=1)
    backend.checkpoint = (30, "older.pt")  # an older manifest (a stale read) is not stored
    pool.cycle(advance=1)
    with pool.db.read() as s:
        rows = s.exec(select(CheckpointRow).where(CheckpointRow.job_id == job)).all()
    assert [(r.step, r.path) for r in rows] == [(40, f"{job_folder(DEFAULT_ROOT, job)}/step-40.pt")]
    backend.set_health("h100-00", Health.UNHEALTHY, pool.clock())
    pool.cycle(advance=1)  # lost: infrastructure, requeued and placed on the other node
    assert pool.job(job).restarts == 0, "an infrastructure failure is not charged"
    pool.cycle()
    launched = [g for g in backend._gangs.values() if g.attempt == 1]
    assert launched and launched[0].nodes == ["h100-01"]
    assert pool.state(job) in (JobState.STARTING, JobState.RUNNING)


def test_lost_work_counts_from_the_last_checkpoint_and_recovery_is_timed(db_url: str) -> None:
    """A gang of 8 accelerators that checkpointed 4 s before it failed loses 32
    accelerator-seconds; it runs again after its 5 s backoff plus a cycle."""
    backend = ReportingBackend(nodes(2), default_duration=100.0, start_delay=0.0)
    pool = Pool(db_url, backend=backend)
    pool.submit("a", env={"SIM_DURATION": 10, "SIM_FAIL_ATTEMPTS": 1}, restart={"backoff_seconds": 5})
    pool.cycle()
    pool.cycle(advance=1)  # running since t0 + 1
    backend.checkpoint = (3, "3")
    pool.cycle(advance=5)  # the checkpoint is stored at t0 + 6
    lost: list[tuple[str, str, float]] = []
    recovered: list[tuple[str, float]] = []
    real = pool.loop.cycle

    def watched() -> None:
        out = real()
        if out is not None:
            lost.extend(out.lost)
            recovered.extend(out.recovered)

    pool.loop.cycle = watched  # type: ignore[method-assign]
    pool.cycle(advance=4)  # the sim gang exits 1 at t0 + 10 (launched at t0); seen at t0 + 10
    assert lost == [("a", "job", 8 * 4.0)]
    pool.cycle(advance=6)  # backoff over: placed again
    pool.cycle(advance=1)  # running
    assert [r for r, _ in recovered] == ["job"] and recovered[0][1] == 7.0


def test_a_kill_for_the_jobs_own_memory_blames_no_node() -> None:
    def failed(message: str, code: int = 137) -> GangStatus:
        return GangStatus("j/0", "j", 0, Phase.FAILED, exit_code=code, message=message, node="h100-00")

    # The kernel OOM killer's SIGKILL and a crash may be the node's doing...
    assert blamed_node(None, failed("rank 0: exit code 137 (killed by SIGKILL)")) == "h100-00"  # type: ignore[arg-type]
    assert blamed_node(None, failed("rank 0: exit code 139 (killed by SIGSEGV)", 139)) == "h100-00"  # type: ignore[arg-type]
    # ...a container past its own limit, or Ray's memory monitor, is the job's memory.
    monitor = (
        "rank 1: exit code 137 (killed by SIGKILL): killed by Ray's memory monitor: 1 worker(s) were killed"
    )
    assert blamed_node(None, failed(monitor)) is None  # type: ignore[arg-type]
    assert blamed_node(None, failed("rank 0: exit code 137 (OOMKilled)")) is None  # type: ignore[arg-type]
