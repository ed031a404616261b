"""The ``ray`` backend: pool nodes are labelled Ray nodes, a gang is one placement
group pinned to the chosen nodes plus one detached actor per replica.

Nothing here blocks the control loop for long: placement groups and actors are
created asynchronously, every poll is ``ray.wait(..., timeout=0)`` on futures the
actors resolve (process started, process exited, checkpoint read), and stop's grace
period runs inside the actors. The backend's state that must survive a restart of the
server (which gangs exist, their layout, whether a stop was asked, their outcome) is
a JSON record per gang in the cluster's internal KV store; the actors and placement
groups are named after the gang key, so a new backend finds them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError
from ray.experimental import internal_kv as kv
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from scheduler.backends.base import (
    MEMORY_MONITOR_KILL,
    SURVIVOR_GRACE,
    BackendError,
    GangStatus,
    Launch,
    Phase,
)
from scheduler.backends.folder_reports import newer_checkpoint, rank_reports
from scheduler.backends.gang_phase import FINAL, Judgement, decided_at, gang_phase
from scheduler.backends.ray import labels as lb
from scheduler.backends.ray.connection import connect, disconnect
from scheduler.backends.ray.gang import Death, Exit, Gang
from scheduler.backends.ray.layout import (
    KV_PREFIX,
    NAMESPACE,
    actor_name,
    ignored_image,
    kv_key,
    loss_detection_seconds,
    placement_group_name,
    replica_env,
    replicas,
)
from scheduler.backends.ray.replica import LAST_LINE, ReplicaProcess, read_manifest
from values.domain import Node

log = logging.getLogger(__name__)

# A replica's bundle and actor reserve this much CPU: Ray must not refuse a gang for
# CPU on simulated nodes, and the job's real CPU use is not Ray's to police here.
BUNDLE_CPU = 0.01
# A stopped replica whose actor has not answered this long after its grace period is
# killed with its actor (it was never placed, or its actor hangs).
KILL_SLACK = 10.0
# Rank 0's checkpoint manifest is read this often while a gang runs.
CHECKPOINT_EVERY = 2.0
# A replica Ray's memory monitor killed reads as the OOM killer's SIGKILL (128 + 9): the
# restart rules then count it as ``oom``.
OOM_EXIT = 137
DEFAULT_START_TIMEOUT = 300.0
# gangs() re-reads Ray's node table when the last read (by inventory()) is older.
NODES_FRESH = 1.0

_Replica = ray.remote(ReplicaProcess)


class RayBackend:
    """``now`` must be wall-clock time (the loop's default clock): it is compared with
    the times the actors report and with the time of stops and launches."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        state_dir: str | Path = ".",
        workdir: str | Path | None = None,
        namespace: str = NAMESPACE,
        visibility: dict[str, str] | None = None,
        defaults: dict[str, Node] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        correlation_window: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.log_root = Path(state_dir).resolve() / "ray-logs"
        # Jobs run in this directory on every node; relative paths in commands and
        # checkpoint dirs are relative to it (the server's working directory by default).
        self.workdir = str(Path(workdir).resolve() if workdir else Path.cwd())
        self.visibility = visibility or {}
        self.defaults = defaults or {}
        self.start_timeout = start_timeout
        # How long a replica's non-zero exit waits for a node loss to explain it.
        window = correlation_window
        self.correlation_window = loss_detection_seconds() if window is None else window
        self._owns_connection = connect(address, namespace)
        self._gangs: dict[str, Gang] = {}
        self._nodes: dict[str, lb.RayNode] = {}
        self._alive_ids: set[str] = set()
        self._nodes_at = 0.0
        self.inventory_seconds = 0.0  # cost of the last inventory poll (for measurements)
        self._refresh_nodes()
        self._adopt_all()

    # --- inventory -------------------------------------------------------------------
    def inventory(self, now: float) -> list[Node]:
        return [rn.node for rn in self._refresh_nodes()]

    def _refresh_nodes(self) -> list[lb.RayNode]:
        started = time.perf_counter()
        records = ray.nodes()
        self._alive_ids = {str(r["NodeID"]) for r in records if r.get("Alive")}
        found = lb.pool_nodes(records, self.defaults)
        self._nodes = {rn.node.name: rn for rn in found}
        self.inventory_seconds = time.perf_counter() - started
        self._nodes_at = time.monotonic()
        return found

    # --- launch ----------------------------------------------------------------------
    def launch(self, launch: Launch, now: float) -> None:
        if launch.key in self._gangs:
            return
        found = kv._internal_kv_get(kv_key(launch.key), namespace=self.namespace)
        if found:
            self._adopt(launch.key, json.loads(found))  # launched by a previous server
            return
        if (warning := ignored_image(launch.job_id, launch.attempt, launch.spec.image)) is not None:
            log.warning("%s", warning)
        self._refresh_nodes()
        targets = []
        for node, _ in launch.assignments:
            rn = self._nodes.get(node)
            if rn is None:
                raise BackendError(
                    f"node '{node}' is not in the Ray cluster (no Ray node labelled {lb.NODE}={node})"
                )
            if not rn.alive:
                raise BackendError(f"node '{node}' is dead in the Ray cluster")
            if rn.node.flavor != launch.flavor:
                raise BackendError(f"node '{node}' has flavor '{rn.node.flavor}', not '{launch.flavor}'")
            targets.append(rn)
        spec = launch.spec
        reps = replicas(
            launch.assignments,
            spec.gang.accelerators,
            busy=self._busy_devices(),
            capacity={rn.node.name: rn.node.accelerators for rn in targets},
        )
        ckdir = launch.env.get("TRAINPOOL_CHECKPOINT_DIR")
        g = Gang(
            key=launch.key, job_id=launch.job_id, attempt=launch.attempt, flavor=launch.flavor, replicas=reps,
            node_ids=[self._nodes[r.node].node_id for r in reps], launched_at=now,
            checkpoint_dir=str(Path(self.workdir, ckdir)) if ckdir else None,
        )  # fmt: skip
        # The record first: a server that dies after it but before the actors exist
        # finds a gang whose replicas are missing (LOST), never an untracked actor.
        self._save(g)
        self._gangs[g.key] = g
        try:
            self._create(g, launch)
        except Exception as exc:
            log.exception("launching %s failed", g.key)
            self._teardown(g)
            kv._internal_kv_del(kv_key(g.key), namespace=self.namespace)
            del self._gangs[g.key]
            raise BackendError(f"Ray could not launch the gang: {exc}") from None

    def _create(self, g: Gang, launch: Launch) -> None:
        accel = launch.spec.gang.accelerators
        bundle: dict[str, float] = {"CPU": BUNDLE_CPU}
        if accel > 0:
            bundle[lb.accel_resource(g.flavor)] = float(accel)
        pg = ray.util.placement_group(
            [dict(bundle) for _ in g.replicas],
            strategy="PACK",  # a preference only; the label selectors are the hard pins
            name=placement_group_name(g.key),
            lifetime="detached",
            bundle_label_selector=[{lb.RAY_NODE_ID: nid} for nid in g.node_ids],
        )
        visibility = self.visibility.get(g.flavor, "CUDA_VISIBLE_DEVICES")
        log_dir = self.log_dir(g.key)
        log_dir.mkdir(parents=True, exist_ok=True)
        for r in g.replicas:
            env = replica_env(r, g.world, launch.spec.env, launch.env, visibility)
            actor = _Replica.options(
                name=actor_name(g.key, r.rank), namespace=self.namespace, lifetime="detached",
                max_restarts=0, max_task_retries=0, max_concurrency=32, num_cpus=BUNDLE_CPU,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r.rank),
            ).remote(list(launch.spec.command), env, self.workdir, str(log_dir / f"rank-{r.rank}.log"),
                     g.checkpoint_dir if r.rank == 0 else None)  # fmt: skip
            g.actors.append(actor)
        self._watch(g)

    def _watch(self, g: Gang) -> None:
        """Ask every live actor for its start and its exit (idempotent calls)."""
        rank0 = g.actors[0] if g.actors else None
        for rank, actor in enumerate(g.actors):
            if actor is None or rank in g.done():
                continue
            if g.stop_at is None:
                g.run_refs[rank] = actor.run.remote(None if rank == 0 else rank0)
            else:  # a stopped gang (found after a restart) never starts a process again
                actor.terminate.remote(max(0.0, g.stop_at + g.grace - time.time()))
            g.wait_refs[rank] = actor.wait.remote()

    def _busy_devices(self) -> dict[str, set[int]]:
        busy: dict[str, set[int]] = {}
        for g in self._gangs.values():
            if not g.torn_down:
                for r in g.replicas:
                    if r.rank not in g.done():
                        busy.setdefault(r.node, set()).update(r.devices)
        return busy

    # --- observe ---------------------------------------------------------------------
    def gangs(self, now: float) -> list[GangStatus]:
        if time.monotonic() - self._nodes_at > NODES_FRESH:
            self._refresh_nodes()
        out = []
        for g in list(self._gangs.values()):
            try:
                self._observe(g, now)
            except RayError:
                log.exception("observing gang %s failed; retrying next cycle", g.key)
            if g.forgotten:
                if g.torn_down:
                    kv._internal_kv_del(kv_key(g.key), namespace=self.namespace)
                    del self._gangs[g.key]
                continue
            out.append(self._status(g, now))
        return out

    def next_change_at(self, now: float) -> float | None:
        """When a held non-zero exit becomes the job's failure: the loop wakes for it."""
        held = [decided_at(g.observed(), self.correlation_window) for g in self._gangs.values()
                if g.outcome is None and not g.forgotten]  # fmt: skip
        return min((at for at in held if at is not None), default=None)

    def _observe(self, g: Gang, now: float) -> None:
        if g.torn_down:
            return
        refs = {**{("run", r): ref for r, ref in g.run_refs.items()},
                **{("wait", r): ref for r, ref in g.wait_refs.items()}}  # fmt: skip
        if g.ckpt_ref is not None:
            refs[("ckpt", 0)] = g.ckpt_ref
        if g.progress_ref is not None:
            refs[("progress", 0)] = g.progress_ref
        if refs:
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0)
            ready_ids = {r.hex() for r in ready}
            for (what, rank), ref in refs.items():
                if ref.hex() in ready_ids:
                    self._collect(g, what, rank, ref, now)
        self._notice_silent_deaths(g, now)
        if g.outcome is None:
            verdict = self._judge(g, now)
            if verdict.phase in FINAL:
                self._decide(g, verdict, now)
        if g.outcome is None and g.running and now - g.ckpt_asked >= CHECKPOINT_EVERY and g.ckpt_ref is None:
            self._ask_checkpoint(g, now)
        if g.outcome is not None and len(g.done()) >= g.world:
            self._teardown(g)
            self._save(g)

    def _collect(self, g: Gang, what: str, rank: int, ref: Any, now: float) -> None:
        if what == "ckpt":
            g.ckpt_ref = None
            # Rank 0 gone: its loss is seen through its wait future.
            with contextlib.suppress(RayError):
                g.checkpoint = newer_checkpoint(g.checkpoint, ray.get(ref))
            return
        if what == "progress":
            g.progress_ref = None
            with contextlib.suppress(RayError):
                g.progress = rank_reports(ray.get(ref), g.nodes)
            return
        (g.run_refs if what == "run" else g.wait_refs).pop(rank, None)
        try:
            value = ray.get(ref)
        except ActorUnavailableError:
            # Temporarily unreachable (not dead): ask again next cycle.
            if g.actors[rank] is not None:
                target = g.actors[rank]
                if what == "run":
                    g.run_refs[rank] = target.run.remote(None if rank == 0 else g.actors[0])
                else:
                    g.wait_refs[rank] = target.wait.remote()
            return
        except RayActorError as exc:
            self._died(g, rank, now, exc)
            return
        except RayError as exc:  # the call itself failed (e.g. rank 0 never answered)
            self._died(g, rank, now, exc)
            return
        if what == "run":
            g.placed[rank] = str(value.get("node_id"))
            if value.get("spawned"):
                g.running.add(rank)
        else:
            code, at, *said = value  # an actor started by an older server says less
            g.exits.setdefault(rank, Exit(code, at if at is not None else now, said[0] if said else ""))

    def _died(self, g: Gang, rank: int, now: float, exc: BaseException) -> None:
        if rank in g.done():
            return
        node = g.replicas[rank].node
        if (why := memory_monitor_kill(exc)) is not None:
            # The job's own memory use, not the node's fault: a failure of the job
            # (category oom), not a lost replica that would blame a healthy node.
            g.exits[rank] = Exit(OOM_EXIT, now, why)
            g.run_refs.pop(rank, None)
            g.wait_refs.pop(rank, None)
            return
        self._refresh_nodes()
        if g.node_ids[rank] not in self._alive_ids:
            message = f"node {node} lost"
        else:
            message = (
                f"replica actor died: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
            )
        g.deaths[rank] = Death(node, message, now)
        g.run_refs.pop(rank, None)
        g.wait_refs.pop(rank, None)

    def _notice_silent_deaths(self, g: Gang, now: float) -> None:
        """Deaths no future reports (yet): a pinned node gone before its replica started,
        a gang that never started, replicas that outlived their stop."""
        for r in g.replicas:
            if r.rank in g.done():
                continue
            if g.node_ids[r.rank] not in self._alive_ids:
                g.deaths[r.rank] = Death(r.node, f"node {r.node} lost", now)
            elif g.stop_at is not None and now > g.stop_at + g.grace + KILL_SLACK:
                self._kill_actor(g, r.rank)
                g.exits[r.rank] = Exit(None, now)
            elif g.outcome is None and r.rank not in g.running and now - g.launched_at > self.start_timeout:
                g.deaths[r.rank] = Death(r.node, f"did not start within {self.start_timeout:g}s", now)

    def _judge(self, g: Gang, now: float) -> Judgement:
        return g.outcome or gang_phase(
            g.observed(), stop_requested_at=g.stop_at, now=now, window=self.correlation_window
        )

    def _decide(self, g: Gang, verdict: Judgement, now: float) -> None:
        g.outcome = verdict
        survivors = [r for r in range(g.world) if r not in g.done()]
        if survivors and verdict.phase in (Phase.FAILED, Phase.LOST):
            for rank in survivors:
                actor = g.actors[rank] if rank < len(g.actors) else None
                if actor is not None:
                    actor.terminate.remote(SURVIVOR_GRACE)
            g.stop_at, g.grace = now, SURVIVOR_GRACE  # bounds how long they may linger
        self._final_checkpoint(g)
        self._save(g)

    def _ask_checkpoint(self, g: Gang, now: float) -> None:
        if g.checkpoint_dir and g.actors and g.actors[0] is not None and 0 not in g.deaths:
            g.ckpt_ref = g.actors[0].checkpoint.remote()
            if g.progress_ref is None:
                g.progress_ref = g.actors[0].progress.remote(g.attempt)
            g.ckpt_asked = now

    def _final_checkpoint(self, g: Gang) -> None:
        """The last manifest before the outcome is reported: a job stopped with grace
        saves one on SIGTERM, and its restart must resume from that one."""
        if not g.checkpoint_dir:
            return
        seen = None
        if g.actors and g.actors[0] is not None and 0 not in g.deaths:
            ref = g.actors[0].checkpoint.remote()
            ready, _ = ray.wait([ref], timeout=1.0)
            if ready:
                try:
                    seen = ray.get(ref)
                except RayError:
                    seen = None
        if seen is None and Path(g.checkpoint_dir).is_dir():
            seen = read_manifest(g.checkpoint_dir)  # a shared filesystem: read it here
        g.checkpoint = newer_checkpoint(g.checkpoint, seen)

    def _status(self, g: Gang, now: float) -> GangStatus:
        v = self._judge(g, now)
        return GangStatus(
            key=g.key, job_id=g.job_id, attempt=g.attempt, phase=v.phase, exit_code=v.exit_code,
            message=v.message, node=v.node, at=v.at, checkpoint=g.checkpoint, progress=g.progress,
            settled=g.torn_down or len(g.done()) >= g.world,
        )  # fmt: skip

    # --- stop, forget ----------------------------------------------------------------
    def stop(self, key: str, grace_seconds: float, now: float) -> None:
        g = self._gangs.get(key)
        if g is None or g.forgotten or g.stop_at is not None or g.outcome is not None:
            return
        g.stop_at, g.grace = now, max(0.0, grace_seconds)
        for rank, actor in enumerate(g.actors):
            if actor is not None and rank not in g.done():
                actor.terminate.remote(g.grace)
        self._save(g)

    def forget(self, key: str) -> None:
        g = self._gangs.get(key)
        if g is None:
            return
        g.forgotten = True
        if len(g.done()) < g.world:
            # Still running (the survivors of a failed gang, or a forget without a stop):
            # they go now; teardown follows in gangs() once their exits are seen.
            for rank, actor in enumerate(g.actors):
                if actor is not None and rank not in g.done():
                    actor.terminate.remote(0.0)
            if g.stop_at is None:
                g.stop_at, g.grace = time.time(), 0.0
            self._save(g)
            return
        self._teardown(g)
        kv._internal_kv_del(kv_key(key), namespace=self.namespace)
        del self._gangs[key]

    def _teardown(self, g: Gang) -> None:
        """Kill the actors and remove the placement group: the capacity is free now."""
        for rank in range(len(g.actors)):
            self._kill_actor(g, rank)
        try:
            pg = ray.util.get_placement_group(placement_group_name(g.key))
            ray.util.remove_placement_group(pg)
        except (ValueError, RayError):
            pass  # never created, or already removed
        g.run_refs.clear()
        g.wait_refs.clear()
        g.ckpt_ref = g.progress_ref = None
        g.torn_down = True

    def _kill_actor(self, g: Gang, rank: int) -> None:
        actor = g.actors[rank] if rank < len(g.actors) else None
        if actor is None:
            return
        with contextlib.suppress(ValueError, RayError):
            ray.kill(actor, no_restart=True)
        g.actors[rank] = None
        g.run_refs.pop(rank, None)
        g.wait_refs.pop(rank, None)

    # --- logs ------------------------------------------------------------------------
    def log_dir(self, key: str) -> Path:
        job, attempt = key.rsplit("/", 1)
        return self.log_root / job / attempt

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        """One replica's last ``tail`` lines, or, for the whole gang, each replica's last
        ``tail`` lines prefixed ``[rank N] ``, in rank order. From the log files where this
        server can read them (one machine, or a shared filesystem), else from the replicas'
        actors while the gang runs; None where neither has them."""
        g = self._gangs.get(key)
        ranks = range(g.world) if g is not None else self._ranks_on_disk(key)
        wanted = [replica] if replica is not None else list(ranks)
        found: dict[int, list[str]] = {}
        for rank in wanted:
            lines = self._replica_log(key, g, rank, tail)
            if lines is not None:
                found[rank] = lines
        if replica is not None:
            return found.get(replica)
        if not found:
            return None
        return [f"[rank {rank}] {line}" for rank in sorted(found) for line in found[rank]]

    def _ranks_on_disk(self, key: str) -> list[int]:
        folder = self.log_dir(key)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("-")[1]) for p in folder.glob("rank-*.log"))

    def _replica_log(self, key: str, g: Gang | None, rank: int, tail: int) -> list[str] | None:
        path = self.log_dir(key) / f"rank-{rank}.log"
        if path.exists():
            return _tail(path, tail)
        actor = g.actors[rank] if g is not None and rank < len(g.actors) else None
        if actor is None:
            return None
        try:
            lines: list[str] = ray.get(actor.tail.remote(tail), timeout=5.0)
        except RayError:
            return None
        return lines

    def close(self) -> None:
        """Disconnect; the gangs keep running and a new backend finds them again."""
        self._gangs.clear()
        if self._owns_connection:
            disconnect()
            self._owns_connection = False

    # --- the state that outlives the server ---------------------------------------------
    def _save(self, g: Gang) -> None:
        kv._internal_kv_put(kv_key(g.key), json.dumps(g.record()), overwrite=True, namespace=self.namespace)

    def _adopt_all(self) -> None:
        for raw in kv._internal_kv_list(KV_PREFIX, namespace=self.namespace):
            key = raw.decode()[len(KV_PREFIX) :]
            value = kv._internal_kv_get(raw, namespace=self.namespace)
            if value is not None and key not in self._gangs:
                try:
                    self._adopt(key, json.loads(value))
                except (KeyError, ValueError, TypeError, IndexError):
                    log.exception("unreadable gang record %s; ignored", key)

    def _adopt(self, key: str, record: dict[str, Any]) -> None:
        """A gang a previous server launched: its actors by name; a replica whose
        actor is gone is lost."""
        g = Gang.from_record(key, record)
        now = time.time()
        if not g.torn_down:
            for r in g.replicas:
                try:
                    g.actors.append(ray.get_actor(actor_name(key, r.rank), namespace=self.namespace))
                except ValueError:
                    g.actors.append(None)
                    if g.outcome is None or g.stop_at is not None:
                        g.deaths.setdefault(r.rank, Death(r.node, "replica actor gone", now))
                    else:
                        g.exits.setdefault(r.rank, Exit(None, now))
            self._watch(g)
        self._gangs[key] = g


def memory_monitor_kill(exc: BaseException) -> str | None:
    """Why Ray's memory monitor killed the replica's actor (the node ran low on memory
    and Ray killed a worker to free it), or None for any other death."""
    text = str(exc)
    if "NODE_OUT_OF_MEMORY" not in text and "running low on memory" not in text:
        return None
    line = next((line for line in text.splitlines() if "low on memory" in line), "")
    detail = line.split("Worker exit detail:", 1)[-1].strip() or "the node ran low on memory"
    return f"{MEMORY_MONITOR_KILL}: {detail}"[:LAST_LINE]


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except OSError:
        return []
