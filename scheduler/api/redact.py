"""Messages name only the jobs their reader may see.

The core explains a wait with the job it waits for ("room on h100 is held for j-…",
"at the latest when j-… reaches its limit"), whichever org that job belongs to. Job ids
leak what another org runs, and the API answers 404 for them, so the id of a job in an
org the caller cannot see is replaced by "a job of another org" on the way out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlmodel import Session, col, select

from scheduler.api.auth import can_see_org
from scheduler.store.tables import JobRow
from scheduler.store.tokens import Principal
from values.names import JOB_ID_PATTERN

JOB_ID = re.compile(rf"\b{JOB_ID_PATTERN}\b")
HIDDEN = "a job of another org"


class Redactor:
    def __init__(self, s: Session, who: Principal, texts: Iterable[str | None]) -> None:
        self.hidden: set[str] = set()
        if who.is_pool_admin:
            return
        named = {m for t in texts if t for m in JOB_ID.findall(t)}
        if not named:
            return
        orgs = dict(s.exec(select(JobRow.id, JobRow.org).where(col(JobRow.id).in_(sorted(named)))).all())
        # An id that is no job at all is left alone: it tells nothing about anyone.
        self.hidden = {i for i in named if i in orgs and not can_see_org(who, orgs[i])}

    def text(self, value: str) -> str:
        if not self.hidden or not value:
            return value
        return JOB_ID.sub(lambda m: HIDDEN if m.group(0) in self.hidden else m.group(0), value)

    def id(self, value: str | None) -> str | None:
        return None if value in self.hidden else value
