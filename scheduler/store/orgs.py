"""Organizations, teams and quotas, and the audit log of changes to them."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlmodel import Session, col, select

from scheduler.store.tables import AuditRow, OrgRow, QuotaRow, TeamRow
from values.quotas import FlavorQuota, Org, Team


def audit(session: Session, now: float, actor: str | None, action: str, target: str, **detail: Any) -> None:
    session.add(AuditRow(at=now, actor=actor, action=action, target=target, detail=json.dumps(detail)))


def audit_log(
    session: Session,
    limit: int = 200,
    *,
    since: float | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> list[AuditRow]:
    """Newest first; ``action`` matches an action or, ending in a dot, its family."""
    stmt = select(AuditRow)
    if since is not None:
        stmt = stmt.where(col(AuditRow.at) >= since)
    if action:
        stmt = stmt.where(col(AuditRow.action).startswith(action) if action.endswith(".") else
                          AuditRow.action == action)  # fmt: skip
    if actor:
        stmt = stmt.where(AuditRow.actor == actor)
    return list(session.exec(stmt.order_by(col(AuditRow.id).desc()).limit(limit)).all())


def ensure_org(session: Session, name: str, now: float, weight: float = 1.0) -> OrgRow:
    row = session.get(OrgRow, name)
    if row is None:
        row = OrgRow(name=name, weight=weight, created_at=now)
        session.add(row)
        session.flush()
    return row


def seed_from_config(session: Session, orgs: tuple[Org, ...], now: float) -> None:
    """Create orgs, teams and quotas named in the pool file that the store lacks.

    Rows that exist are left alone: once the pool runs, the API owns quotas, and a
    restart with the same file must not undo a `quota set`.
    """
    for org in orgs:
        if session.get(OrgRow, org.name) is None:
            session.add(OrgRow(name=org.name, weight=org.weight, created_at=now))
            session.flush()
            for flavor, q in org.quotas.items():
                session.add(QuotaRow(org=org.name, flavor=flavor, **q.model_dump()))
            for team in org.teams:
                session.add(TeamRow(org=org.name, name=team.name, weight=team.weight))
            audit(
                session,
                now,
                None,
                "org.seed",
                org.name,
                quotas={f: q.model_dump() for f, q in org.quotas.items()},
            )


def get_org(session: Session, name: str) -> OrgRow | None:
    return session.get(OrgRow, name)


def list_orgs(session: Session, names: list[str] | None = None) -> list[OrgRow]:
    stmt = select(OrgRow).order_by(col(OrgRow.name))
    if names is not None:
        stmt = stmt.where(col(OrgRow.name).in_(names))
    return list(session.exec(stmt).all())


def quotas(session: Session, org: str | None = None) -> list[QuotaRow]:
    stmt = select(QuotaRow).order_by(col(QuotaRow.org), col(QuotaRow.flavor))
    if org is not None:
        stmt = stmt.where(QuotaRow.org == org)
    return list(session.exec(stmt).all())


def teams(session: Session, org: str | None = None) -> list[TeamRow]:
    stmt = select(TeamRow).order_by(col(TeamRow.org), col(TeamRow.name))
    if org is not None:
        stmt = stmt.where(TeamRow.org == org)
    return list(session.exec(stmt).all())


def set_quota(
    session: Session, org: str, flavor: str, quota: FlavorQuota, now: float, actor: str | None
) -> QuotaRow:
    row = session.get(QuotaRow, (org, flavor), with_for_update=True)
    before = None
    if row is None:
        row = QuotaRow(org=org, flavor=flavor)
    else:
        before = {
            "nominal": row.nominal,
            "borrowing_limit": row.borrowing_limit,
            "lending_limit": row.lending_limit,
        }
    row.nominal = quota.nominal
    row.borrowing_limit = quota.borrowing_limit
    row.lending_limit = quota.lending_limit
    row.version += 1
    session.add(row)
    audit(session, now, actor, "quota.set", f"{org}/{flavor}", before=before, after=quota.model_dump())
    return row


def set_team(session: Session, org: str, team: str, weight: float, now: float, actor: str | None) -> TeamRow:
    row = session.get(TeamRow, (org, team), with_for_update=True)
    if row is None:
        row = TeamRow(org=org, name=team)
    row.weight = weight
    session.add(row)
    audit(session, now, actor, "team.set", f"{org}/{team}", weight=weight)
    return row


def domain_orgs(session: Session) -> tuple[Org, ...]:
    """The orgs as the decision core reads them."""
    by_org: dict[str, dict[str, FlavorQuota]] = defaultdict(dict)
    for q in quotas(session):
        by_org[q.org][q.flavor] = FlavorQuota(
            nominal=q.nominal, borrowing_limit=q.borrowing_limit, lending_limit=q.lending_limit
        )
    team_rows: dict[str, list[Team]] = defaultdict(list)
    for t in teams(session):
        team_rows[t.org].append(Team(name=t.name, weight=t.weight))
    return tuple(
        Org(name=o.name, weight=o.weight, quotas=by_org[o.name], teams=tuple(team_rows[o.name]))
        for o in list_orgs(session)
    )
