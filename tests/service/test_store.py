"""The store on SQLite and PostgreSQL: migrations, idempotent submit, guarded writes, tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from scheduler.store import jobs as jobstore
from scheduler.store import lease
from scheduler.store import nodes as nodestore
from scheduler.store import tokens as tokenstore
from scheduler.store.db import (
    Database,
    alembic_config,
    current_revision,
    head_revision,
    normalize_url,
    open_database,
    upgrade,
)
from scheduler.store.tokens import Role
from values.domain import JobSpec
from values.lifecycle import IllegalTransition, JobEvent

SPEC = JobSpec.model_validate({"name": "train", "org": "a", "gang": {"flavor": "h100"}})


def test_a_new_database_is_migrated_to_head_and_matches_the_models(db_url: str) -> None:
    db = open_database(db_url)
    assert current_revision(db) == head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    open_database(db_url)  # a second start finds nothing to do


def test_a_missing_sqlite_file_is_created_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pool.db"
    db = open_database(str(path))
    assert db.created and path.exists()
    assert not open_database(str(path)).created


def test_database_urls_are_normalized_and_checked() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match="--db"):
        normalize_url("mysql://u@h/db")


def test_submit_is_idempotent_per_org_and_request_id(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        first = jobstore.submit(s, SPEC, priority=1, now=1.0, submitted_by=None, client_request_id="r1")
    with db.write() as s:
        again = jobstore.submit(s, SPEC, priority=1, now=2.0, submitted_by=None, client_request_id="r1")
    assert first.created and not again.created and again.job.id == first.job.id
    other = SPEC.model_copy(update={"name": "other"})
    with db.write() as s, pytest.raises(jobstore.RequestConflict):
        jobstore.submit(s, other, priority=1, now=3.0, submitted_by=None, client_request_id="r1")
    with db.read() as s:
        assert len(jobstore.list_jobs(s)) == 1


def test_a_write_based_on_a_stale_read_is_refused(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        job_id = jobstore.submit(
            s, SPEC, priority=1, now=1.0, submitted_by=None, client_request_id=None
        ).job.id
    with db.read() as s:
        stale = jobstore.get(s, job_id)
    with db.write() as s:
        jobstore.cancel(s, jobstore.get(s, job_id), 2.0, by="user")
    with db.write() as s, pytest.raises(jobstore.StaleWrite):
        jobstore.move(s, stale, JobEvent.ADMIT, 3.0)
    with db.read() as s:
        assert jobstore.get(s, job_id).state == "CANCELLED"
        assert [e.event for e in jobstore.events(s, job_id)] == ["submitted", "cancel"]


def test_an_illegal_transition_is_refused_and_not_recorded(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        job = jobstore.submit(s, SPEC, priority=1, now=1.0, submitted_by=None, client_request_id=None).job
    with db.write() as s, pytest.raises(IllegalTransition):
        jobstore.move(s, jobstore.get(s, job.id), JobEvent.SUCCEEDED, 2.0)
    with db.read() as s:
        assert jobstore.get(s, job.id).state == "PENDING"
        assert len(jobstore.events(s, job.id)) == 1


def test_tokens_are_stored_hashed_and_can_be_revoked(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        row, secret = tokenstore.create(s, Role.MEMBER, "a", "alice", 1.0, None)
    assert secret not in row.secret_hash and len(row.secret_hash) == 64
    with db.read() as s:
        found = tokenstore.verify(s, secret, 0.0)
        assert found is not None and (found[0].role, found[0].org) == (Role.MEMBER, "a")
        assert tokenstore.verify(s, secret + "x", 0.0) is None
    with db.write() as s:
        tokenstore.revoke(s, tokenstore.list_tokens(s, "a")[0], 2.0, None)
    with db.read() as s:
        assert tokenstore.verify(s, secret, 0.0) is None


def test_the_first_admin_token_is_made_once(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        first = tokenstore.bootstrap_admin(s, 1.0, None)
    with db.write() as s:
        second = tokenstore.bootstrap_admin(s, 2.0, None)
    assert first is not None and second is None
    with db.read() as s:
        found = tokenstore.verify(s, first, 0.0)
        assert found is not None and found[0].is_pool_admin


def test_an_expired_token_is_refused(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        _, secret = tokenstore.create(s, Role.MEMBER, "a", "short-lived", 1.0, None, expires_at=100.0)
    with db.read() as s:
        assert tokenstore.verify(s, secret, 99.9) is not None
        assert tokenstore.verify(s, secret, 100.0) is None


def test_the_lease_has_one_holder_until_it_expires(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        assert lease.acquire(s, "one", 0.0, 10.0) == 1
    with db.write() as s:
        assert lease.acquire(s, "two", 5.0, 10.0) is None
        assert lease.acquire(s, "one", 5.0, 10.0) == 1  # renewal keeps the epoch
    with db.write() as s:
        assert lease.acquire(s, "two", 16.0, 10.0) == 2
        assert not lease.holds(s, "one", 1, 16.0)


def test_migrations_go_down_and_up_again(db_url: str) -> None:
    db = open_database(db_url)
    _downgrade(db, "base")
    assert current_revision(db) in (None, "")
    upgrade(db)
    assert current_revision(db) == head_revision()
    with db.write() as s:  # the upgraded schema takes rows
        jobstore.submit(s, SPEC, priority=1, now=1.0, submitted_by=None, client_request_id=None)


def _downgrade(db: Database, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_a_database_from_the_first_release_upgrades_in_place(db_url: str) -> None:
    db = open_database(db_url, migrate=False)
    upgrade(db, "0001")
    with db.write_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO nodes (name, flavor, accelerators, cpu, memory_gb, zone, spine, rack, health,"
                " cordoned, present, updated_at, version)"
                " VALUES ('old-node', 'h100', 8, 64, 512, 'z', 's', 'r', 'healthy', true, true, 1, 3)"
            )
        )
    upgrade(db)
    assert current_revision(db) == head_revision()
    with db.read() as s:
        row = nodestore.get_node(s, "old-node")
        assert row is not None and row.cordoned and row.version == 3  # kept as it was
        assert row.reported_health is None and row.reported_reason == ""


def test_group_commit_stores_each_request_once(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from scheduler.store.batch import SubmitBatcher

    db = open_database(db_url)
    batcher = SubmitBatcher(db)
    other = SPEC.model_copy(update={"name": "other"})

    def one(i: int) -> object:
        spec, rid = (SPEC, f"r{i % 10}") if i < 40 else (other, "r0")  # 40 tries of 10 ids, then clashes
        try:
            return batcher.submit(spec, priority=1, now=float(i), submitted_by=None, client_request_id=rid)
        except jobstore.RequestConflict as exc:
            return exc

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(40)))
        results += list(pool.map(one, range(40, 50)))
    batcher.close()
    created = [r for r in results if isinstance(r, jobstore.Submitted) and r.created]
    conflicts = [r for r in results if isinstance(r, jobstore.RequestConflict)]
    assert len(created) == 10 and len(conflicts) == 10
    assert batcher.batches < 50  # requests shared transactions
    with db.read() as s:
        assert len(jobstore.list_jobs(s)) == 10


def test_the_pending_cache_follows_the_queue(db_url: str) -> None:
    from scheduler.store.view import LiveCache

    db = open_database(db_url)
    cache = LiveCache()
    with db.write() as s:
        ids = [
            jobstore.submit(
                s, SPEC, priority=p, now=float(p), submitted_by=None, client_request_id=None
            ).job.id
            for p in (1, 2, 3)
        ]
    with db.read() as s:
        assert [j.id for j in cache.load(s)[1]] == ids
    with db.write() as s:
        jobstore.cancel(s, jobstore.get(s, ids[0]), 5.0, by="t")
        jobstore.touch(s, jobstore.get(s, ids[1]), priority=9, eligible_at=42.0)
    with db.read() as s:
        rows, pending = cache.load(s)
    assert [j.id for j in pending] == ids[1:]
    assert (pending[0].priority, pending[0].eligible_at) == (9, 42.0)  # re-read: its version moved
    assert rows[0].priority == 9


def test_key_lists_of_any_length_share_a_few_statement_shapes(db_url: str) -> None:
    """The loop reads jobs by id lists of every length; each length used to be its own
    prepared statement in the drivers' caches, which grew with the jobs seen."""
    from sqlalchemy import event
    from sqlmodel import select

    from scheduler.store.keys import among
    from scheduler.store.tables import JobRow

    db = open_database(db_url)
    with db.write() as s:
        subs = [
            jobstore.submit(s, SPEC, priority=1, now=float(i), submitted_by=None, client_request_id=f"r{i}")
            for i in range(300)
        ]
    ids = [sub.job.id for sub in subs]
    texts: set[str] = set()
    event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, stmt, *_: texts.add(stmt))
    with db.read() as s:
        for n in range(1, 301):
            rows = s.exec(select(JobRow).where(among(JobRow.id, ids[:n]))).all()
            assert sorted(r.id for r in rows) == sorted(ids[:n])  # padding adds no rows, loses none
    assert len(texts) <= 12, f"{len(texts)} statement texts for 300 list lengths"  # 1, 2, 4 .. 512


def test_reasons_noted_in_bulk_skip_the_jobs_that_moved_since_they_were_read(db_url: str) -> None:
    db = open_database(db_url)
    with db.write() as s:
        ids = [
            jobstore.submit(s, SPEC, priority=1, now=1.0, submitted_by=None, client_request_id=f"n{i}").job.id
            for i in range(3)
        ]
    with db.read() as s:
        seen = [jobstore.get(s, i) for i in ids]  # what the loop decided on
    with db.write() as s:  # meanwhile the API cancels the second job
        jobstore.move(s, jobstore.get(s, ids[1]), JobEvent.CANCEL, 2.0, reason="cancelled")
    note = {"reason": "waiting_for_capacity", "message": "no room", "estimated_start": 50.0}
    with db.write() as s:
        assert jobstore.touch_many(s, [(job, note) for job in seen]) == 2
    assert [job.version for job in seen] == [1, 0, 1]  # the moved job's row is not pretended updated
    with db.read() as s:
        stored = [jobstore.get(s, i) for i in ids]
    assert [(j.state, j.reason) for j in stored] == [
        ("PENDING", "waiting_for_capacity"),
        ("CANCELLED", "cancelled"),  # not noted: it had left the queue
        ("PENDING", "waiting_for_capacity"),
    ]


def test_an_unchanged_running_job_is_the_same_object_in_the_next_snapshot(db_url: str) -> None:
    """The core's carried state tells an unchanged running job by identity: a snapshot
    that rebuilt every running job made each one count as changed, every cycle."""
    from scheduler.store.tables import CheckpointRow
    from scheduler.store.view import LiveCache, PoolView, build
    from values.lifecycle import JobState

    from .harness import Pool, nodes

    pool = Pool(db_url, node_list=nodes(3))
    ids = [pool.submit(accelerators=2) for _ in range(3)]
    pool.cycle()
    pool.cycle(advance=1.0)
    assert [pool.state(i) for i in ids] == [JobState.RUNNING] * 3
    cache, view = LiveCache(), PoolView()

    def running() -> dict[str, object]:
        with pool.db.read() as s:
            return {r.id: r for r in build(s, view, pool.clock(), cache).snapshot.running}

    first = running()
    again = running()
    assert set(first) == set(ids) and all(again[i] is first[i] for i in ids)
    with pool.db.write() as s:
        s.add(CheckpointRow(job_id=ids[0], attempt=0, path="/ckpt/1", step=1, at=pool.clock()))
    after = running()
    assert after[ids[0]] is not first[ids[0]]
    assert after[ids[0]].last_checkpoint_at == pool.clock()  # type: ignore[attr-defined]
    assert all(after[i] is first[i] for i in ids[1:])


def test_the_resume_point_and_the_listed_top_checkpoint_are_one_row_on_every_database(db_url: str) -> None:
    from sqlmodel import select

    from scheduler.control.act import _resume_points
    from scheduler.store.tables import CheckpointRow

    db = open_database(db_url)
    with db.write() as s:  # two reports in the same second: one without a step, one at step 5
        s.add(CheckpointRow(job_id="j-1", attempt=0, path="/ck/j-1/with-step", step=5, at=100.0))
        s.add(CheckpointRow(job_id="j-1", attempt=0, path="/ck/j-1/no-step", step=None, at=100.0))
    assert _resume_points(db, ["j-1"], "/ck") == {"j-1": "/ck/j-1/with-step"}
    with db.read() as s:
        top = s.exec(select(CheckpointRow).order_by(*jobstore.checkpoint_order(newest_first=True))).first()
    assert top is not None and top.path == "/ck/j-1/with-step"
