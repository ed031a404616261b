"""The ``sim`` backend: virtual nodes; a gang "runs" for a duration and then exits.

A job's spec env steers it: ``SIM_DURATION`` (seconds, else the backend default),
``SIM_EXIT_CODE`` (its exit code, default 0), ``SIM_FAIL_ATTEMPTS`` (attempts below this
number exit 1, so a job can fail a few times and then succeed). Time is whatever ``now``
the loop passes in. Progress, for jobs that report it: ``SIM_STEP_SECONDS`` (each rank's
step time), ``SIM_HANG_AFTER`` (seconds after the start when every rank stops stepping,
in attempts below ``SIM_HANG_ATTEMPTS``, default 1), ``SIM_SLOW_NODE`` and
``SIM_SLOW_FACTOR`` (a rank on that node computes this many times slower, and the gang
steps at its pace); ``SIM_CHECKPOINT_EVERY`` (rank 0 reports a checkpoint every this many
seconds of stepping).

With a ``state_path`` the gangs survive a restart of the server, as a real cluster's
would, at a cost of O(changes): every launch, stop, forget and health change appends one
JSON line to a journal beside it (``<state_path>.journal``), whose first line is a
snapshot; when the journal has grown past a few times the live set it is compacted (a
new snapshot written aside and renamed over it). A new process (a new leader) replays
the journal; a running one notices another writer by the journal's inode and size and
replays it. The file at ``state_path`` itself is a small JSON head, rewritten in place
on every launch: the launch and overcommit counters, for whoever checks them from outside.
No fsync: the sim stands in for a cluster, it is not a database.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.backends.base import FINISHED, BackendError, GangStatus, Launch
from scheduler.backends.gang_phase import EXITED, FINAL, LOST, RUNNING, Replica, decided_at, status_of
from scheduler.backends.registry import BackendSettings
from values.domain import Health, Node
from values.progress import RankReport


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
    # Progress reports (see the module's docstring); None: the job reports none.
    step_seconds: float | None = None
    hang_after: float | None = None
    slow_node: str | None = None
    slow_factor: float = 1.0
    checkpoint_every: float | None = None
    checkpoint_dir: str | None = None
    resumed_step: int = 0  # the step of the checkpoint it resumed from: its steps go on from there


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
        # Gang keys by node, for the overcommit check of a launch (scanning every gang
        # per launch made a 10,000-gang cycle quadratic). Keys of gangs gone may linger
        # (looked up in _gangs); None: rebuild it from _gangs, which replays replace.
        self._on_node: dict[str, set[str]] | None = None
        self._archive: dict[str, list[str]] = {}
        self.launches = 0  # launch calls that started a gang (tests count duplicates)
        # Launches that found a node without room: the scheduler double-allocated.
        self.overcommits = 0
        self._journal = _Journal(self._path) if self._path is not None else None
        self._load()

    # --- what a test or operator does to the virtual pool --------------------------
    def set_health(self, node: str, health: Health, now: float) -> None:
        self._nodes[node] = self._nodes[node].model_copy(update={"health": health})
        lost = []
        if health is Health.UNHEALTHY:
            for g in self._gangs.values():
                if node in g.nodes and g.lost_node is None and not self._status(g, now).settled:
                    g.lost_node, g.lost_at = node, now
                    lost.append(g.key)
        self._save({"op": "health", "node": node, "health": health.value, "at": now, "lost": lost})

    def add_node(self, node: Node) -> None:
        """A node joins the virtual pool (an operator racked it)."""
        self._nodes[node.name] = node
        self._save({"op": "join", "node": node.model_dump(mode="json")})

    # --- the Backend protocol ------------------------------------------------------
    def inventory(self, now: float) -> list[Node]:
        self._refresh()
        return list(self._nodes.values())

    def gangs(self, now: float) -> list[GangStatus]:
        return [self._status(g, now) for g in self._gangs.values()]

    def next_change_at(self, now: float) -> float | None:
        """The first moment after ``now`` that a live gang's observation changes (a replica
        comes up or exits, a held exit is decided): every change here is foreseeable, so the
        loop wakes for it instead of finding it at its next poll."""
        times: list[float] = []
        for g in self._gangs.values():
            replicas = self._replicas(g, now)
            held = decided_at(replicas, self.correlation_window)
            if held is not None:
                times.append(held)
            if all(r.state in (EXITED, LOST) for r in replicas):
                continue
            natural_end = g.launched_at + g.duration
            times += [g.launched_at + g.start_delay, natural_end, natural_end + self.stop_delay]
            if g.stop_requested_at is not None:
                times.append(g.stop_requested_at + min(g.grace, self.stop_delay))
            if g.lost_at is not None:
                times.append(g.lost_at + self.stop_delay)
        return min((t for t in times if t > now), default=None)

    def launch(self, launch: Launch, now: float) -> None:
        if launch.key in self._gangs:
            return
        for node, _ in launch.assignments:
            if node not in self._nodes:
                raise BackendError(f"node '{node}' is not in the sim pool")
            if self._nodes[node].health is Health.UNHEALTHY:
                raise BackendError(f"node '{node}' is unhealthy")
        held = {n: k * launch.spec.gang.accelerators for n, k in launch.assignments}
        busy = self._held(now, held)
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
            step_seconds=_float(env.get("SIM_STEP_SECONDS"), 0.0) or None,
            hang_after=_float(env.get("SIM_HANG_AFTER"), -1.0)
            if launch.attempt < _int(env.get("SIM_HANG_ATTEMPTS"), 1) and env.get("SIM_HANG_AFTER")
            else None,
            slow_node=env.get("SIM_SLOW_NODE") or None,
            slow_factor=_float(env.get("SIM_SLOW_FACTOR"), 1.0),
            checkpoint_every=_float(env.get("SIM_CHECKPOINT_EVERY"), 0.0) or None,
            checkpoint_dir=launch.env.get("TRAINPOOL_CHECKPOINT_DIR"),
            resumed_step=_resumed_step(launch.env.get("TRAINPOOL_RESUME_FROM")),
        )
        self._index(self._gangs[launch.key])
        self.launches += 1
        gang = vars(self._gangs[launch.key])
        self._save({"op": "launch", "gang": gang, "launches": self.launches, "overcommits": self.overcommits})

    def stop(self, key: str, grace_seconds: float, now: float) -> None:
        g = self._gangs.get(key)
        # A failed or lost gang's survivors go by themselves, as on Ray.
        if g is None or g.stop_requested_at is not None or self._status(g, now).phase in FINAL:
            return
        g.stop_requested_at, g.grace = now, grace_seconds
        self._save({"op": "stop", "key": key, "at": now, "grace": grace_seconds})

    def forget(self, key: str) -> None:
        g = self._gangs.get(key)
        if g is not None:
            # Keep what `logs` would say, for the last few hundred finished gangs.
            lines = self._lines(g, g.launched_at + g.duration)
            self._apply({"op": "forget", "key": key, "lines": lines})
            self._save({"op": "forget", "key": key, "lines": lines})

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
    def _held(self, now: float, nodes: Iterable[str]) -> dict[str, int]:
        """Accelerators held on ``nodes`` by gangs not yet settled."""
        index = self._node_index()
        keys = set().union(*(index.get(n, ()) for n in nodes))
        busy: dict[str, int] = {}
        for key in keys:
            g = self._gangs.get(key)
            if g is not None and not self._status(g, now).settled:
                for n, k in (g.held or {}).items():
                    busy[n] = busy.get(n, 0) + k
        return busy

    def _node_index(self) -> dict[str, set[str]]:
        if self._on_node is None:
            self._on_node = {}
            for g in self._gangs.values():
                self._index(g)
        return self._on_node

    def _index(self, g: SimGang) -> None:
        if self._on_node is not None:
            for n in g.nodes:
                self._on_node.setdefault(n, set()).add(g.key)

    def _status(self, g: SimGang, now: float) -> GangStatus:
        replicas = self._replicas(g, now)
        return status_of(
            g.key, g.job_id, g.attempt, replicas, stop_requested_at=g.stop_requested_at,
            now=now, window=self.correlation_window, checkpoint=self._checkpoint(g, replicas, now),
            progress=self._progress(g, replicas, now),
        )  # fmt: skip

    @staticmethod
    def _worked(g: SimGang, r: Replica, now: float) -> float:
        """Seconds replica ``r`` has stepped: from the start to its exit or now, less a hang."""
        if r.state != RUNNING and r.state != EXITED:
            return 0.0
        began = g.launched_at + g.start_delay
        until = min(now, r.at) if r.state == EXITED and r.at is not None else now
        if g.hang_after is not None:
            until = min(until, began + g.hang_after)
        return max(0.0, until - began)

    def _progress(self, g: SimGang, replicas: list[Replica], now: float) -> tuple[RankReport, ...]:
        """Each rank's step: the gang steps at its slowest rank's pace (a rank on
        ``slow_node`` computes ``slow_factor`` times slower) and stops stepping
        ``hang_after`` seconds in; a replica reports while it runs, and its last step after."""
        if g.step_seconds is None:
            return ()
        pace = g.step_seconds * (g.slow_factor if g.slow_node in g.nodes else 1.0)
        out = []
        for r in replicas:
            if r.state == RUNNING or r.state == EXITED:
                own = g.step_seconds * (g.slow_factor if r.node == g.slow_node else 1.0)
                out.append(
                    RankReport(r.rank, g.resumed_step + int(self._worked(g, r, now) / pace), own, r.node)
                )
        return tuple(out)

    def _checkpoint(self, g: SimGang, replicas: list[Replica], now: float) -> tuple[int, str] | None:
        """Rank 0 checkpoints every ``checkpoint_every`` seconds of stepping (not while hung)."""
        if g.checkpoint_every is None or g.checkpoint_dir is None or not replicas:
            return None
        saves = int(self._worked(g, replicas[0], now) / g.checkpoint_every)
        if saves < 1:
            return None
        pace = (g.step_seconds or 1.0) * (g.slow_factor if g.slow_node in g.nodes else 1.0)
        step = g.resumed_step + int(saves * g.checkpoint_every / pace)
        return step, f"{g.checkpoint_dir.rstrip('/')}/sim-{g.attempt}-{step}"

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

    # --- persistence: a journal of changes (see the module's docstring) -------------
    def _save(self, record: dict[str, Any]) -> None:
        """Append one change (already applied in memory) to the journal; compact it when it
        has grown past a few times what a snapshot would hold."""
        j = self._journal
        if j is None:
            return
        if not j.open_for_append():
            self._compact()  # no journal yet (or a torn one): start it with a snapshot
            return
        j.append(record)
        if record["op"] == "launch":
            j.write_head(self.launches, self.overcommits)
        if j.records > _COMPACT_FACTOR * (len(self._gangs) + len(self._archive)) + _COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        assert self._journal is not None
        self._journal.rewrite(self._snapshot())
        self._journal.write_head(self.launches, self.overcommits)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "op": "snapshot",
            "gangs": [vars(g) for g in self._gangs.values()],
            "launches": self.launches,
            "overcommits": self.overcommits,
            "health": {n: node.health.value for n, node in self._nodes.items()},
            "nodes": [node.model_dump(mode="json") for node in self._nodes.values()],  # joins included
            "archive": self._archive,
        }

    def _refresh(self) -> None:
        """Replay the journal if another process (a previous leader) wrote it since: a
        different inode (it compacted) or a size other than what this one wrote."""
        if self._journal is not None and self._journal.changed_by_another():
            self._load()

    def _load(self) -> None:
        j = self._journal
        if j is None:
            return
        head = j.read_head()
        if head is not None and "gangs" in head:  # a state file of the older, rewritten kind
            self._gangs, self._archive, self._on_node = {}, {}, None
            self._apply({**head, "op": "snapshot"})
        elif head is not None:
            self.launches = int(head.get("launches", 0))
            self.overcommits = int(head.get("overcommits", 0))
        records, torn = j.read_all()
        if records:
            self._gangs, self._archive, self._on_node = {}, {}, None
            for record in records:
                self._apply(record)
        if torn or (head is not None and "gangs" in head and not records):
            self._compact()  # drop a torn tail (a crash mid-line) / move to the journal
        elif records and (head is None or (head.get("launches"), head.get("overcommits")) != (
            self.launches, self.overcommits,
        )):  # fmt: skip
            j.write_head(self.launches, self.overcommits)  # killed between the journal and the head

    def _apply(self, r: dict[str, Any]) -> None:
        """Replay one journal record. Each sets state rather than changing it, so replaying
        a record twice (two writers' interleaved lines) does no harm."""
        op = r.get("op")
        if op == "snapshot":
            self._gangs, self._on_node = {g["key"]: SimGang(**g) for g in r.get("gangs", [])}, None
            self._archive = dict(r.get("archive", {}))
            self.launches = int(r.get("launches", 0))
            self.overcommits = int(r.get("overcommits", 0))
            for data in r.get("nodes", []):
                joined = Node.model_validate(data)
                self._nodes.setdefault(joined.name, joined)
            for name, health in r.get("health", {}).items():
                if name in self._nodes:
                    self._nodes[name] = self._nodes[name].model_copy(update={"health": Health(health)})
        elif op == "launch":
            gang = SimGang(**r["gang"])
            if self._gangs.setdefault(gang.key, gang) is gang:
                self._index(gang)
            self.launches = max(self.launches, int(r["launches"]))
            self.overcommits = max(self.overcommits, int(r["overcommits"]))
        elif op == "stop":
            g = self._gangs.get(r["key"])
            if g is not None:
                g.stop_requested_at, g.grace = r["at"], r["grace"]
        elif op == "forget":
            gone = self._gangs.pop(r["key"], None)
            if gone is not None and self._on_node is not None:
                for n in gone.nodes:
                    self._on_node.get(n, set()).discard(gone.key)
            if gone is not None or r["key"] in self._archive:
                self._archive[r["key"]] = r["lines"]
                while len(self._archive) > _ARCHIVE:
                    self._archive.pop(next(iter(self._archive)))
        elif op == "join":
            joined = Node.model_validate(r["node"])
            self._nodes.setdefault(joined.name, joined)
        elif op == "health":
            node = r["node"]
            if node in self._nodes:
                self._nodes[node] = self._nodes[node].model_copy(update={"health": Health(r["health"])})
            for key in r.get("lost", []):
                g = self._gangs.get(key)
                if g is not None and g.lost_node is None:
                    g.lost_node, g.lost_at = node, r["at"]


class _Journal:
    """The sim's files: the journal (JSON lines, appended through one kept-open descriptor)
    and the fixed-width head at ``state_path``, rewritten in place."""

    def __init__(self, path: Path) -> None:
        self.head_path = path
        self.path = path.with_name(path.name + ".journal")
        self.records = 0  # lines in the journal, its snapshot included
        self.bytes_written = 0  # journal, snapshots and head, since this process opened it
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._ino = 0
        self._size = 0  # what this process has read or written of the journal

    def open_for_append(self) -> bool:
        """Whether the journal is open for appending (it exists and was read)."""
        return self._fd is not None

    def append(self, record: dict[str, Any]) -> None:
        assert self._fd is not None
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, line)
        self._size += len(line)
        self.records += 1
        self.bytes_written += len(line)

    def rewrite(self, snapshot: dict[str, Any]) -> None:
        line = (json.dumps(snapshot, separators=(",", ":")) + "\n").encode()
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(line)
        os.replace(tmp, self.path)
        self._close_journal()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._ino, self._size, self.records = os.fstat(self._fd).st_ino, len(line), 1
        self.bytes_written += len(line)

    def changed_by_another(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return st.st_ino != self._ino or st.st_size != self._size

    def read_all(self) -> tuple[list[dict[str, Any]], bool]:
        """Every whole record, and whether a torn or unreadable line was dropped."""
        self._close_journal()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return [], False
        with open(fd, "rb", closefd=False) as f:
            data = f.read()
        st = os.fstat(fd)
        records, torn = [], not data.endswith(b"\n") and bool(data)
        for raw in data.splitlines():
            try:
                records.append(json.loads(raw))
            except ValueError:
                torn = True
        if not records or records[0].get("op") != "snapshot":
            torn = True  # not a journal this backend wrote: start over from what was read
        self._fd, self._ino, self._size, self.records = fd, st.st_ino, len(data), len(records)
        return records, torn

    def read_head(self) -> dict[str, Any] | None:
        try:
            head = json.loads(self.head_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return head if isinstance(head, dict) else None

    def write_head(self, launches: int, overcommits: int) -> None:
        text = f'{{"format": 2, "launches": {launches:<20}, "overcommits": {overcommits:<20}, '
        text += f'"journal": {json.dumps(self.path.name)}}}\n'
        data = text.encode()
        if self._head_fd is None:
            self._head_fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(self._head_fd, 0)
        os.pwrite(self._head_fd, data, 0)
        self.bytes_written += len(data)

    def _close_journal(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def from_server(settings: BackendSettings) -> SimBackend:
    return SimBackend(
        list(settings.config.all_nodes), default_duration=settings.sim_duration, state_path=settings.sim_state
    )


_ARCHIVE = 500
# Compact the journal when its records outnumber this many times the snapshot's, plus a slack.
_COMPACT_FACTOR = 4
_COMPACT_SLACK = 1000


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


def _resumed_step(path: str | None) -> int:
    """The step of a checkpoint this backend wrote (``.../sim-<attempt>-<step>``), else 0."""
    name = (path or "").rstrip("/").rsplit("/", 1)[-1]
    parts = name.split("-")
    return int(parts[2]) if len(parts) == 3 and parts[0] == "sim" and parts[2].isdigit() else 0
