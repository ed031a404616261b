"""Bearer tokens: random secrets shown once, stored as sha256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, col, select

from scheduler.store.orgs import audit
from scheduler.store.tables import TokenRow

PREFIX = "tp_"


class Role(StrEnum):
    MEMBER = "member"  # own org's jobs
    ORG_ADMIN = "org-admin"  # and own org's team split, tokens and usage
    POOL_ADMIN = "pool-admin"  # everything


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: Role
    org: str | None  # None only for pool admins

    @property
    def is_pool_admin(self) -> bool:
        return self.role is Role.POOL_ADMIN


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create(
    session: Session,
    role: Role,
    org: str | None,
    name: str,
    now: float,
    actor: str | None,
    secret: str | None = None,
    expires_at: float | None = None,
) -> tuple[TokenRow, str]:
    """A new token and its secret; the secret is never stored or shown again."""
    secret = secret or new_secret()
    row = TokenRow(
        id="t-" + secrets.token_hex(6),
        secret_hash=hash_secret(secret),
        role=role.value,
        org=org,
        name=name,
        created_at=now,
        created_by=actor,
        expires_at=expires_at,
    )
    session.add(row)
    audit(
        session,
        now,
        actor,
        "token.create",
        row.id,
        role=role.value,
        org=org,
        name=name,
        expires_at=expires_at,
    )
    return row, secret


def verify(session: Session, secret: str, now: float) -> tuple[Principal, float | None] | None:
    """The principal behind ``secret`` and its expiry, or None if unknown, revoked or expired."""
    digest = hash_secret(secret)
    row = session.exec(select(TokenRow).where(TokenRow.secret_hash == digest)).first()
    # The lookup is by hash (an index); the compare is constant-time anyway so the
    # answer's timing does not depend on how much of the hash matched.
    if row is None or not hmac.compare_digest(row.secret_hash, digest) or not usable(row, now):
        return None
    return Principal(token_id=row.id, role=Role(row.role), org=row.org), row.expires_at


def usable(row: TokenRow, now: float) -> bool:
    """Neither revoked nor expired."""
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def revoke(session: Session, row: TokenRow, now: float, actor: str | None) -> list[TokenRow]:
    """Revoke ``row`` and what it delegated: the tokens an org-admin token made, and
    theirs, go with it (its holder leaving takes their delegations along). A pool-admin
    token's tokens stay: they answer to the pool, and rotating an admin token must not
    take every org's tokens down with it. Returns the tokens revoked besides ``row``."""
    also: list[TokenRow] = []
    makers = [row]
    while makers:
        maker = makers.pop()
        if maker.revoked_at is None:
            maker.revoked_at = now
            session.add(maker)
            detail: dict[str, str | None] = {"role": maker.role, "org": maker.org}
            if maker is not row:
                detail["revoked_with"] = row.id
                also.append(maker)
            audit(session, now, actor, "token.revoke", maker.id, **detail)
        if maker.role == Role.POOL_ADMIN.value:
            continue
        stmt = select(TokenRow).where(TokenRow.created_by == maker.id, col(TokenRow.revoked_at).is_(None))
        makers += session.exec(stmt).all()
    return also


def list_tokens(session: Session, org: str | None = None) -> list[TokenRow]:
    stmt = select(TokenRow).order_by(col(TokenRow.created_at))
    if org is not None:
        stmt = stmt.where(TokenRow.org == org)
    return list(session.exec(stmt).all())


def any_pool_admin(session: Session) -> bool:
    stmt = select(TokenRow.id).where(
        TokenRow.role == Role.POOL_ADMIN.value, col(TokenRow.revoked_at).is_(None)
    )
    return session.exec(stmt).first() is not None


def bootstrap_admin(session: Session, now: float, secret: str | None) -> str | None:
    """Make the first pool-admin token if there is none.

    With ``secret`` (from the environment) that secret becomes the token, idempotently;
    otherwise a new one is returned, to be printed once. None: nothing was created.
    """
    if secret:
        if session.exec(select(TokenRow).where(TokenRow.secret_hash == hash_secret(secret))).first():
            return None
        create(session, Role.POOL_ADMIN, None, "bootstrap (environment)", now, None, secret=secret)
        return None
    if any_pool_admin(session):
        return None
    _, made = create(session, Role.POOL_ADMIN, None, "bootstrap", now, None)
    return made
