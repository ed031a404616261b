"""Node agents in the store: their node-bound tokens, registrations, latest reports,
the health verdicts computed from them, and health events.

Imports nothing from the rest of the store: ``tables`` imports this module so that the
tables below are on ``SQLModel.metadata`` wherever the schema is (migrations, tests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, col, select

TOKEN_PREFIX = "tpa_"


class AgentTokenRow(SQLModel, table=True):
    """A credential that acts for one node only (agents never get the pool-admin role)."""

    __tablename__ = "agent_tokens"

    id: str = Field(primary_key=True, max_length=32)
    node: str = Field(max_length=63, index=True)
    secret_hash: str = Field(max_length=64, unique=True)
    name: str = Field(default="", max_length=128)
    created_at: float = 0.0
    created_by: str | None = Field(default=None, max_length=32)
    revoked_at: float | None = None


class AgentRow(SQLModel, table=True):
    """One node's agent: where it listens, its topology, and its latest report."""

    __tablename__ = "agents"

    node: str = Field(primary_key=True, max_length=63)
    # A new session on every registration; reports carry it with a sequence number
    # that must grow, so a captured report cannot be replayed.
    session: str = Field(max_length=64)
    address: str = Field(max_length=253)
    probe_port: int = 0
    metrics_port: int | None = None
    flavor: str | None = Field(default=None, max_length=63)
    accelerators: int = 0
    zone: str | None = Field(default=None, max_length=63)
    spine: str | None = Field(default=None, max_length=63)
    rack: str | None = Field(default=None, max_length=63)
    registered_at: float = 0.0
    last_seen_at: float = 0.0
    last_seq: int = -1
    last_sent_at: float = 0.0
    report: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))


class NodeVerdictRow(SQLModel, table=True):
    """The health model's verdict on a node and the evidence behind it."""

    __tablename__ = "node_verdicts"

    node: str = Field(primary_key=True, max_length=63)
    state: str = Field(max_length=16)
    since: float | None = None
    reasons: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    evidence: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    updated_at: float = 0.0


class HealthEventRow(SQLModel, table=True):
    """Append-only: a node, rack or link changed state, with what showed it."""

    __tablename__ = "health_events"

    id: int | None = Field(default=None, primary_key=True)
    at: float
    kind: str = Field(max_length=16)  # node | rack | link
    subject: str = Field(max_length=160, index=True)
    state: str = Field(max_length=16)
    message: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    evidence: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))


# --- tokens ----------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session, node: str, name: str, now: float, actor: str | None
) -> tuple[AgentTokenRow, str]:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = AgentTokenRow(
        id="a-" + secrets.token_hex(6), node=node, secret_hash=hash_secret(secret), name=name, created_at=now,
        created_by=actor,
    )  # fmt: skip
    session.add(row)
    return row, secret


def verify_token(session: Session, secret: str) -> AgentTokenRow | None:
    digest = hash_secret(secret)
    row = session.exec(select(AgentTokenRow).where(AgentTokenRow.secret_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, digest) or row.revoked_at is not None:
        return None
    return row


def list_tokens(session: Session) -> list[AgentTokenRow]:
    return list(session.exec(select(AgentTokenRow).order_by(col(AgentTokenRow.created_at))).all())


# --- registrations and reports -----------------------------------------------------------


def register(session: Session, node: str, fields: dict[str, Any], now: float) -> AgentRow:
    row = session.get(AgentRow, node, with_for_update=True) or AgentRow(node=node, session="", address="")
    for k, v in fields.items():
        setattr(row, k, v)
    row.session = secrets.token_hex(16)
    row.registered_at = now
    row.last_seen_at = now
    row.last_seq = -1
    row.last_sent_at = 0.0
    session.add(row)
    return row


class ReportRefused(Exception):
    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Stamp:
    session: str
    seq: int
    sent_at: float


def accept_report(
    session: Session, node: str, stamp: Stamp, report_json: str, now: float, max_skew: float
) -> AgentRow:
    """Store a report as the node's latest, unless it is stale, replayed or from another session."""
    row = session.get(AgentRow, node, with_for_update=True)
    if row is None:
        raise ReportRefused(409, f"node '{node}' has no registered agent; register first", "node")
    if stamp.session != row.session:
        raise ReportRefused(
            409, "session: not the current session of this node's agent; register again", "session"
        )
    if stamp.seq <= row.last_seq:
        raise ReportRefused(409, f"seq: {stamp.seq} is not after {row.last_seq} (a replayed report?)", "seq")
    if abs(stamp.sent_at - now) > max_skew:
        raise ReportRefused(
            422,
            f"sent_at: {stamp.sent_at - now:+.0f}s from the server's clock (limit {max_skew:g}s)",
            "sent_at",
        )
    if stamp.sent_at < row.last_sent_at:
        raise ReportRefused(409, "sent_at: older than the previous report", "sent_at")
    row.last_seq, row.last_sent_at, row.last_seen_at, row.report = stamp.seq, stamp.sent_at, now, report_json
    session.add(row)
    return row


def list_agents(session: Session) -> list[AgentRow]:
    return list(session.exec(select(AgentRow).order_by(col(AgentRow.node))).all())


def get_agent(session: Session, node: str) -> AgentRow | None:
    return session.get(AgentRow, node)


# --- verdicts and events -------------------------------------------------------------------


def save_verdict(
    session: Session,
    node: str,
    state: str,
    since: float | None,
    reasons: list[str],
    evidence: dict[str, Any],
    now: float,
) -> None:
    row = session.get(NodeVerdictRow, node) or NodeVerdictRow(node=node, state=state)
    row.state, row.since, row.updated_at = state, since, now
    row.reasons, row.evidence = json.dumps(reasons), json.dumps(evidence, default=str)
    session.add(row)


def verdicts(session: Session) -> list[NodeVerdictRow]:
    return list(session.exec(select(NodeVerdictRow)).all())


def get_verdict(session: Session, node: str) -> NodeVerdictRow | None:
    return session.get(NodeVerdictRow, node)


def add_event(
    session: Session, at: float, kind: str, subject: str, state: str, message: str, evidence: dict[str, Any]
) -> None:
    session.add(
        HealthEventRow(
            at=at, kind=kind, subject=subject, state=state, message=message,
            evidence=json.dumps(evidence, default=str),
        )
    )  # fmt: skip


def events(session: Session, subject: str | None = None, limit: int = 100) -> list[HealthEventRow]:
    stmt = select(HealthEventRow).order_by(col(HealthEventRow.id).desc()).limit(limit)
    if subject is not None:
        stmt = stmt.where(HealthEventRow.subject == subject)
    return list(session.exec(stmt).all())


def events_after(session: Session, after: int, limit: int = 200) -> list[HealthEventRow]:
    stmt = (
        select(HealthEventRow)
        .where(col(HealthEventRow.id) > after)
        .order_by(col(HealthEventRow.id))
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def events_about_node(session: Session, node: str, rack: str | None, limit: int = 20) -> list[HealthEventRow]:
    """The node's own events, its rack's, and those of links it is an end of."""
    subjects = [node] + ([rack] if rack else [])
    stmt = (
        select(HealthEventRow)
        .where(
            col(HealthEventRow.subject).in_(subjects)
            | col(HealthEventRow.subject).startswith(f"{node}~")
            | col(HealthEventRow.subject).endswith(f"~{node}")
        )
        .order_by(col(HealthEventRow.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt).all())
