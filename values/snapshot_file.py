"""A saved snapshot of the live pool: what `trainpool sim --from-live` replays, and what
`--save` writes for later (a support artifact, like KAI-Scheduler's snapshot tool).

It is the core's own ``Snapshot``, serialized as is, so a replay decides on exactly what
the loop decided on. Two rules make it safe to hand around: no job carries its command,
environment or image (they hold secrets and paths), and for an org-admin every other org
is a pseudonym (``org-1``, ``org-2``, ...) with anonymous jobs (``job-1``, ...): its jobs
still hold their nodes and quota in the replay, but nothing names them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from values.domain import JobSpec
from values.errors import ConfigError, validation_problems
from values.quotas import Org
from values.snapshot import PendingJob, RunningJob, Snapshot

FORMAT: Literal["trainpool-snapshot/1"] = "trainpool-snapshot/1"


class SnapshotFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["trainpool-snapshot/1"] = FORMAT
    taken_at: float  # the server's clock when it was taken: the replay starts here
    # "pool": everything, as a pool-admin sees it; "org:<name>": as that org's admin does.
    scope: str
    snapshot: Snapshot


def load(text: str, source: str) -> SnapshotFile:
    """A saved snapshot, or a ConfigError naming the file and the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([("", f"not JSON ({exc.msg}, line {exc.lineno})")], source) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError([("format", f"not a trainpool snapshot (expected '{FORMAT}')")], source)
    try:
        return SnapshotFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), source) from None


def _stripped(spec: JobSpec, **changes: object) -> JobSpec:
    return spec.model_copy(update={"command": (), "env": {}, "image": None, **changes})


def without_secrets(snap: Snapshot) -> Snapshot:
    """No command, environment or image in any job: the replay needs none of them."""
    return replace(
        snap,
        running=tuple(replace(r, spec=_stripped(r.spec)) for r in snap.running),
        pending=tuple(replace(p, spec=_stripped(p.spec)) for p in snap.pending),
    )


def as_seen_by(snap: Snapshot, org: str) -> Snapshot:
    """``snap`` with every org but ``org`` renamed ``org-N`` and their jobs ``job-N``
    (named ``job``, no team): the same pool for the replay, nothing to read off it."""
    others = sorted({o.name for o in snap.orgs} - {org})
    org_names = {name: f"org-{i}" for i, name in enumerate(others, 1)} | {org: org}
    foreign = [r.id for r in snap.running if r.spec.org != org] + [
        p.id for p in snap.pending if p.spec.org != org
    ]
    job_ids = {job_id: f"job-{i}" for i, job_id in enumerate(sorted(foreign), 1)}

    def ref(job_id: str | None) -> str | None:
        return None if job_id is None else job_ids.get(job_id, job_id)

    def spec(s: JobSpec) -> JobSpec:
        if s.org == org:
            return s
        return s.model_copy(update={"org": org_names[s.org], "name": "job", "team": None})

    def org_row(o: Org) -> Org:
        return o if o.name == org else o.model_copy(update={"name": org_names[o.name], "teams": ()})

    def running(r: RunningJob) -> RunningJob:
        return replace(r, id=ref(r.id) or r.id, spec=spec(r.spec), preempted_for=ref(r.preempted_for))

    def pending(p: PendingJob) -> PendingJob:
        return replace(p, id=ref(p.id) or p.id, spec=spec(p.spec), preempted_by=ref(p.preempted_by))

    usage: Mapping[str, Mapping[str, float]] = {org_names.get(o, o): u for o, u in snap.usage.items()}
    return replace(
        snap,
        orgs=tuple(sorted((org_row(o) for o in snap.orgs), key=lambda o: o.name)),
        running=tuple(running(r) for r in snap.running),
        pending=tuple(pending(p) for p in snap.pending),
        usage=usage,
    )
