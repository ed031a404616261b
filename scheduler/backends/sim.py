"""The ``sim`` backend: virtual nodes; a gang "runs" for a duration and then exits.

A job's spec env steers it: ``SIM_DURATION`` (seconds, else the backend default),
``SIM_EXIT_CODE`` (its exit code, default 0), ``SIM_FAIL_ATTEMPTS`` (attempts below this
number exit 1, so a job can fail a few times and then succeed). Time is whatever ``now``
the loop passes in. With a ``state_path`` the gangs survive a restart of the server, as
a real cluster's would: the file is rewritten atomically on every change.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from scheduler.backends.base import FINISHED, BackendError, GangStatus, Launch
from scheduler.backends.gang_phase import EXITED, FINAL, LOST, RUNNING, Replica, status_of
from scheduler.backends.registry import BackendSettings
from values.domain import Health, Node


@dataclass
class SimGang:
    key: str
    job_id: str
    attempt: int
    nodes: list[str]
    launched_at: float
    duration: float
    exit_code: int
    start_delay: float
    stop_requested_at: float | None = None
    grace: float = 0.0
    lost_node: str | None = None
    lost_at: float | None = None
    # Accelerators held per node, to check that nobody ever overcommits a node.
    held: dict[str, int] | None = None


class SimBackend:
    name = "sim"

    def __init__(
        self,
        nodes: list[Node],
        *,
        default_duration: float = 60.0,
        start_delay: float = 0.0,
        stop_delay: float = 0.0,
        correlation_window: float = 0.0,
        state_path: str | Path | None = None,
    ) -> None:
        self._nodes = {n.name: n for n in nodes}
        self.default_duration = default_duration
        self.start_delay = start_delay
        # A stopped gang exits after min(grace, stop_delay): sim jobs checkpoint instantly.
        # The survivors of a failed gang take stop_delay to go.
        self.stop_delay = stop_delay
        # Node loss is seen at once in virtual time, so no exit needs holding by default.
        self.correlation_window = correlation_window
        self._path = Path(state_path) if state_path else None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._gangs: dict[str, SimGang] = {}
        self._archive: dict[str, list[str]] = {}
        self.launches = 0  # launch calls that started a gang (tests count duplicates)
        # Launches that found a node without room: the scheduler double-allocated.
        self.overcommits = 0
        self._mtime_ns = 0
        self._load()

    # --- what a test or operator does to the virtual pool --------------------------
    def set_health(self, node: str, health: Health, now: float) -> None:
        self._nodes[node] = self._nodes[node].model_copy(update={"health": health})
        if health is Health.UNHEALTHY:
            for g in self._gangs.values():
                if node in g.nodes and g.lost_node is None and not self._status(g, now).settled:
                    g.lost_node, g.lost_at = node, now
        self._save()

    # --- the Backend protocol ------------------------------------------------------
    def inventory(self, now: float) -> list[Node]:
        self._refresh()
        return list(self._nodes.values())

    def gangs(self, now: float) -> list[GangStatus]:
        return [self._status(g, now) for g in self._gangs.values()]

    def launch(self, launch: Launch, now: float) -> None:
        if launch.key in self._gangs:
            return
        for node, _ in launch.assignments:
            if node not in self._nodes:
                raise BackendError(f"node '{node}' is not in the sim pool")
            if self._nodes[node].health is Health.UNHEALTHY:
                raise BackendError(f"node '{node}' is unhealthy")
        held = {n: k * launch.spec.gang.accelerators for n, k in launch.assignments}
        busy = self._held(now)
        if any(busy.get(n, 0) + k > self._nodes[n].accelerators for n, k in held.items()):
            self.overcommits += 1
        env = launch.spec.env
        fail_attempts = _int(env.get("SIM_FAIL_ATTEMPTS"), 0)
        exit_code = 1 if launch.attempt < fail_attempts else _int(env.get("SIM_EXIT_CODE"), 0)
        self._gangs[launch.key] = SimGang(
            key=launch.key,
            job_id=launch.job_id,
            attempt=launch.attempt,
            nodes=[n for n, _ in launch.assignments],
            launched_at=now,
            duration=_float(env.get("SIM_DURATION"), self.default_duration),
            exit_code=exit_code,
            start_delay=self.start_delay,
            held=held,
        )
        self.launches += 1
        self._save()

    def stop(self, key: str, grace_seconds: float, now: float) -> None:
        g = self._gangs.get(key)
        # A failed or lost gang's survivors go by themselves, as on Ray.
        if g is None or g.stop_requested_at is not None or self._status(g, now).phase in FINAL:
            return
        g.stop_requested_at, g.grace = now, grace_seconds
        self._save()

    def forget(self, key: str) -> None:
        g = self._gangs.get(key)
        if g is not None:
            # Keep what `logs` would say, for the last few hundred finished gangs.
            self._archive[key] = self._lines(g, g.launched_at + g.duration)
            while len(self._archive) > _ARCHIVE:
                self._archive.pop(next(iter(self._archive)))
            del self._gangs[key]
            self._save()

    def close(self) -> None:
        pass

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        """Sim gangs print nothing; these lines say what the sim did with the gang."""
        self._refresh()
        g = self._gangs.get(key)
        if g is None:
            archived = self._archive.get(key)
            return None if archived is None else archived[-tail:]
        return self._lines(g, now)[-tail:]

    def _lines(self, g: SimGang, now: float) -> list[str]:
        st = self._status(g, now)
        lines = [f"{g.launched_at:.3f} launched on {', '.join(g.nodes)} for {g.duration:g}s"]
        if g.stop_requested_at is not None:
            lines.append(f"{g.stop_requested_at:.3f} SIGTERM (grace {g.grace:g}s)")
        if st.phase in FINISHED:
            lines.append(f"{st.at or now:.3f} {st.phase.value}" + (f": {st.message}" if st.message else ""))
        return lines

    # --- internals -----------------------------------------------------------------
    def _held(self, now: float) -> dict[str, int]:
        busy: dict[str, int] = {}
        for g in self._gangs.values():
            if not self._status(g, now).settled:
                for n, k in (g.held or {}).items():
                    busy[n] = busy.get(n, 0) + k
        return busy

    def _status(self, g: SimGang, now: float) -> GangStatus:
        return status_of(
            g.key, g.job_id, g.attempt, self._replicas(g, now), stop_requested_at=g.stop_requested_at,
            now=now, window=self.correlation_window,
        )  # fmt: skip

    def _replicas(self, g: SimGang, now: float) -> list[Replica]:
        """One replica per node, as a real gang behaves: a failing job's rank 0 exits with
        its code and the others follow ``stop_delay`` later; a stopped gang saves and
        exits 0; a node lost before its replica ended takes it, and the others' collective
        fails, so they exit 1 ``stop_delay`` later."""
        natural_end = g.launched_at + g.duration
        reps = []
        for rank, node in enumerate(g.nodes):
            end, code = natural_end, g.exit_code
            if g.stop_requested_at is not None and g.stop_requested_at < natural_end:
                end, code = min(g.stop_requested_at + min(g.grace, self.stop_delay), natural_end), 0
            elif code != 0 and rank > 0:
                end += self.stop_delay
            if g.lost_node is not None and g.lost_at is not None and g.lost_at < end:
                if node == g.lost_node:
                    reps.append(Replica(rank, node, LOST, at=g.lost_at, message=f"node {node} lost"))
                    continue
                end, code = g.lost_at + self.stop_delay, 1
            if now >= end:
                reps.append(Replica(rank, node, EXITED, exit_code=code, at=end))
            elif now < g.launched_at + g.start_delay:
                reps.append(Replica(rank, node))
            else:
                reps.append(Replica(rank, node, RUNNING))
        return reps

    def _save(self) -> None:
        if self._path is None:
            return
        data = {
            "gangs": [asdict(g) for g in self._gangs.values()],
            "launches": self.launches,
            "overcommits": self.overcommits,
            "health": {n: node.health.value for n, node in self._nodes.items()},
            "archive": self._archive,
        }
        tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._path)
        self._mtime_ns = self._path.stat().st_mtime_ns

    def _refresh(self) -> None:
        """Re-read the file if another process (a previous leader) wrote it since."""
        if self._path is not None and self._path.exists() and self._path.stat().st_mtime_ns != self._mtime_ns:
            self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        self._mtime_ns = self._path.stat().st_mtime_ns
        data = json.loads(self._path.read_text())
        self._gangs = {g["key"]: SimGang(**g) for g in data.get("gangs", [])}
        self.launches = int(data.get("launches", 0))
        self.overcommits = int(data.get("overcommits", 0))
        self._archive = dict(data.get("archive", {}))
        for name, health in data.get("health", {}).items():
            if name in self._nodes:
                self._nodes[name] = self._nodes[name].model_copy(update={"health": Health(health)})


def from_server(settings: BackendSettings) -> SimBackend:
    return SimBackend(
        list(settings.config.all_nodes), default_duration=settings.sim_duration, state_path=settings.sim_state
    )


_ARCHIVE = 500


def _float(text: str | None, default: float) -> float:
    try:
        value = float(text) if text is not None else default
    except ValueError:
        return default
    return value if value >= 0 else default


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
