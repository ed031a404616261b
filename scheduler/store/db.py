"""Opening the database: SQLite by default, PostgreSQL by URL; migrations at start.

SQLite gets WAL (readers never wait for the writer) and ``BEGIN IMMEDIATE`` for writing
sessions, so two writers queue on the lock instead of failing on a lock upgrade.
PostgreSQL writers lock the rows they decide on (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: it only has to be the same in every trainpool process.
_MIGRATION_LOCK_KEY = 0x7472_6169_6E70


class DatabaseURLError(ValueError):
    pass


def default_sqlite_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trainpool" / "trainpool.db"


def normalize_url(url: str | None) -> str:
    """A SQLAlchemy URL from what a user types: a URL, a file path, or nothing."""
    if not url:
        return f"sqlite:///{default_sqlite_path()}"
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"--db: cannot parse '{url}': {exc}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseURLError(
            f"--db: unsupported database '{parsed.get_backend_name()}' (sqlite or postgresql)"
        )
    return url


@dataclass
class Database:
    url: str
    engine: Engine  # reads, and writes on PostgreSQL
    write_engine: Engine  # BEGIN IMMEDIATE on SQLite
    created: bool  # the SQLite file did not exist before this start
    _local_writer: AbstractContextManager[object] = field(default_factory=nullcontext, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        # SQLite has one writer at a time. Queueing this process's writers on a lock
        # wakes the next one the moment the lock is free; SQLite's own busy handler
        # would make them poll with sleeps of up to 100 ms (p99 latency under load).
        with self._local_writer, Session(self.write_engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses nothing committed when the process dies (SIGKILL); a
        # power cut may drop the last transactions, never corrupt the file.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_database(url: str | None = None, *, migrate: bool = True) -> Database:
    url = normalize_url(url)
    parsed = make_url(url)
    created = False
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            created = not Path(path).exists()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = _sqlite_engine(url, immediate=False)
        write_engine = _sqlite_engine(url, immediate=True)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        write_engine = engine
    db = Database(url=url, engine=engine, write_engine=write_engine, created=created)
    if db.is_sqlite:
        db._local_writer = threading.Lock()
    if migrate:
        upgrade(db)
    return db


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe when several servers start at once."""
    cfg = alembic_config()
    with db.write_engine.begin() as conn:
        if not db.is_sqlite:
            # Serializes concurrent starters; released at commit.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        try:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except Exception:
            return None
    return None if row is None else str(row[0])


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head
