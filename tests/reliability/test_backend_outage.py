"""The backend (Ray head, Kubernetes API) goes silent for a while: running jobs are not
declared failed for it, and when it answers again the loop reconciles what really ran."""

from __future__ import annotations

import contextlib
from pathlib import Path

from service.harness import Pool, nodes

from scheduler.backends.base import BackendError, GangStatus, Launch
from scheduler.backends.sim import SimBackend
from values.domain import Node
from values.lifecycle import JobState


class Unreachable(SimBackend):
    """The sim backend, behind a connection that can be cut."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise BackendError("cannot reach the Ray head at 10.0.0.1:6379")

    def inventory(self, now: float) -> list[Node]:
        self._check()
        return super().inventory(now)

    def gangs(self, now: float) -> list[GangStatus]:
        self._check()
        return super().gangs(now)

    def launch(self, launch: Launch, now: float) -> None:
        self._check()
        super().launch(launch, now)


def test_silent_backend_fails_nothing_and_is_reconciled_on_return(tmp_path: Path) -> None:
    backend = Unreachable(nodes(2), default_duration=100.0)
    pool = Pool(f"sqlite:///{tmp_path / 'pool.db'}", backend=backend)
    long, short = pool.submit("a"), pool.submit("b", env={"SIM_DURATION": 30})
    pool.cycle()
    pool.cycle(advance=1)
    assert pool.state(long) is pool.state(short) is JobState.RUNNING
    events_before = {j: pool.events(j) for j in (long, short)}

    backend.down = True
    waiting = pool.submit("a")
    for _ in range(60):  # a minute of failed cycles
        with contextlib.suppress(BackendError):
            pool.cycle(advance=1)
    assert pool.state(long) is pool.state(short) is JobState.RUNNING, "silence is not failure"
    assert {j: pool.events(j) for j in (long, short)} == events_before
    assert pool.state(waiting) is JobState.PENDING, "nothing is launched into a backend that is away"

    backend.down = False  # back: the short job ended meanwhile, the long one still runs
    pool.cycle(advance=1)
    assert pool.state(short) is JobState.SUCCEEDED
    assert pool.job(short).restarts == 0
    assert pool.state(long) is JobState.RUNNING
    pool.cycle(advance=1)
    assert pool.state(waiting) in (JobState.STARTING, JobState.RUNNING)
    assert backend.launches == 3 and backend.overcommits == 0
