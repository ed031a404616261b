"""The backend's record of one gang: its layout, what its replicas did, and the part
that is saved in the cluster's KV store so that a new server finds it again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scheduler.backends import gang_phase as gp
from scheduler.backends.base import Phase
from scheduler.backends.ray.layout import Replica
from values.progress import RankReport


@dataclass(frozen=True)
class Exit:
    code: int | None  # None: stopped before it ever started
    at: float
    last_line: str = ""  # of its output, when it failed: most programs say why there


@dataclass(frozen=True)
class Death:
    node: str
    message: str
    at: float


@dataclass
class Gang:
    key: str
    job_id: str
    attempt: int
    flavor: str
    replicas: list[Replica]
    node_ids: list[str]
    launched_at: float
    checkpoint_dir: str | None
    actors: list[Any] = field(default_factory=list)  # ActorHandle | None per rank
    run_refs: dict[int, Any] = field(default_factory=dict)
    wait_refs: dict[int, Any] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)
    placed: dict[int, str] = field(default_factory=dict)  # Ray node id each actor runs on
    exits: dict[int, Exit] = field(default_factory=dict)
    deaths: dict[int, Death] = field(default_factory=dict)
    stop_at: float | None = None
    grace: float = 0.0
    # The first final judgement, kept: the survivors of a failed gang are stopped by the
    # backend, and their exits must not turn it into STOPPED.
    outcome: gp.Judgement | None = None
    checkpoint: tuple[int, str] | None = None
    ckpt_ref: Any = None
    ckpt_asked: float = 0.0
    progress: tuple[RankReport, ...] = ()  # each rank's latest report, asked with the checkpoint
    progress_ref: Any = None
    forgotten: bool = False
    torn_down: bool = False

    @property
    def world(self) -> int:
        return len(self.replicas)

    @property
    def nodes(self) -> list[str]:
        return [r.node for r in self.replicas]

    def done(self) -> set[int]:
        return set(self.exits) | set(self.deaths)

    def observed(self) -> list[gp.Replica]:
        """Each rank as the gang-phase rule reads it."""
        out = []
        for r in self.replicas:
            death, ex = self.deaths.get(r.rank), self.exits.get(r.rank)
            if death is not None:
                out.append(gp.Replica(r.rank, r.node, gp.LOST, at=death.at, message=death.message))
            elif ex is not None:
                said = f"{gp.exit_text(ex.code)}: {ex.last_line}" if ex.last_line else ""
                out.append(gp.Replica(r.rank, r.node, gp.EXITED, exit_code=ex.code, at=ex.at, message=said))
            elif r.rank in self.running:
                out.append(gp.Replica(r.rank, r.node, gp.RUNNING))
            else:
                out.append(gp.Replica(r.rank, r.node))
        return out

    def record(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "job_id": self.job_id, "attempt": self.attempt, "flavor": self.flavor,
            "replicas": [[r.rank, r.node, r.local_rank, r.local_world_size, r.node_rank, list(r.devices)]
                         for r in self.replicas],
            "node_ids": self.node_ids, "launched_at": self.launched_at, "checkpoint_dir": self.checkpoint_dir,
            "stop_at": self.stop_at, "grace": self.grace, "forgotten": self.forgotten,
            "checkpoint": list(self.checkpoint) if self.checkpoint else None,
            "outcome": None if o is None else [o.phase.value, o.exit_code, o.node, o.message, o.at],
            "torn_down": self.torn_down,
        }  # fmt: skip

    @classmethod
    def from_record(cls, key: str, d: dict[str, Any]) -> Gang:
        o = d.get("outcome")
        ck = d.get("checkpoint")
        return cls(
            key=key, job_id=d["job_id"], attempt=int(d["attempt"]), flavor=d["flavor"],
            replicas=[Replica(r[0], r[1], r[2], r[3], r[4], tuple(r[5])) for r in d["replicas"]],
            node_ids=list(d["node_ids"]), launched_at=float(d["launched_at"]),
            checkpoint_dir=d.get("checkpoint_dir"), stop_at=d.get("stop_at"),
            grace=float(d.get("grace", 0.0)),
            forgotten=bool(d.get("forgotten")), torn_down=bool(d.get("torn_down")),
            checkpoint=(int(ck[0]), str(ck[1])) if ck else None,
            outcome=None if o is None else gp.Judgement(Phase(o[0]), o[1], o[2], o[3], o[4]),
        )  # fmt: skip
