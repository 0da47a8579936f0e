"""Schema migrations of the job store, on real SQLite and a real PostgreSQL: a new store is
made by the migrations and equals the models; a store of commit 55f2ba1 (before migrations,
``tests/fixtures/store_55f2ba1.sql``) keeps every row and gets correct values in its NOT NULL
columns; migrators take turns; a flow run never migrates and refuses an old schema."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shoal.store import JobRow, Store, new_id
from shoal.store import _migrate as migrate
from shoal.store._db import StoreNotFound, _sessionmaker, get_engine
from shoal.store._tables import Base
from shoal.store.migrations import baseline

FIXTURE = Path(__file__).parent.parent / "fixtures" / "store_55f2ba1.sql"
ALICE_KEY = "sk_fixture_alice_key_0000000000000000000000000"  # make_store_55f2ba1.KEYS
FIXTURE_JOBS = {f"job_FIXTURE{i}" for i in range(7)}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[str]:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shoal.db'}"
    else:
        url = request.getfixturevalue("pg_server").new_database()
    get_engine.cache_clear()
    yield url
    with contextlib.suppress(Exception):
        get_engine(url).dispose()  # its pooled connections, before the next test's database
    get_engine.cache_clear()
    _sessionmaker.cache_clear()


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _fixture_db(tmp_path: Path) -> Path:
    """The 55f2ba1 store of the fixture as a SQLite file."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(FIXTURE.read_text())
    con.close()
    return path


def _load_55f2ba1(url: str, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Make the fixture's store at ``url`` (on PostgreSQL: 55f2ba1's tables by ``create_all``,
    then the fixture's rows); return its rows per table."""
    old = _fixture_db(tmp_path)
    rows: dict[str, list[dict[str, Any]]] = {}
    source = _engine(f"sqlite:///{old}")
    with source.connect() as conn:
        for table in baseline.metadata().sorted_tables:
            rows[table.name] = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    source.dispose()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).write_bytes(old.read_bytes())
    else:
        md = baseline.metadata()
        target = _engine(url)
        with target.begin() as conn:
            md.create_all(conn)
            for table in md.sorted_tables:
                if rows[table.name]:
                    conn.execute(table.insert(), rows[table.name])
        target.dispose()
    return rows


def _rows(url: str, table: str) -> list[dict[str, Any]]:
    engine = _engine(url)
    with engine.connect() as conn:
        t = sa.Table(table, sa.MetaData(), autoload_with=conn)
        found = [dict(r._mapping) for r in conn.execute(sa.select(t))]
    engine.dispose()
    return found


def _assert_schema_is_the_models(db_url: str) -> None:
    """The store's schema is what the models declare (types and server defaults included)."""
    engine = _engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):  # SQLite reads naive UTC
        return a.replace(tzinfo=a.tzinfo or UTC) == b.replace(tzinfo=b.tzinfo or UTC)
    return bool(a == b)


def test_the_listed_revisions_are_the_scripts_in_order() -> None:
    config = migrate._config(None)  # type: ignore[arg-type]
    script = ScriptDirectory.from_config(config)
    walked = [s.revision for s in script.walk_revisions()]
    assert tuple(reversed(walked)) == migrate.REVISIONS
    assert script.get_current_head() == migrate.HEAD


def test_the_baseline_revision_is_the_schema_55f2ba1_created(tmp_path: Path) -> None:
    """Revision 1 on an empty SQLite file gives the DDL that 55f2ba1's ``create_all`` gave."""
    engine = migrate._migrating_engine(f"sqlite:///{tmp_path / 'new.db'}")
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), baseline.REVISION)
    engine.dispose()
    query = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'"
    made = sorted(sqlite3.connect(tmp_path / "new.db").execute(query))
    old = sorted(sqlite3.connect(_fixture_db(tmp_path)).execute(query))
    assert made == old
    assert len([m for m in made if m[0] == "table"]) == 8


def test_a_new_store_is_made_by_the_migrations_and_equals_the_models(db_url: str) -> None:
    done = migrate.upgrade(db_url)
    assert (done.before, done.adopted, done.after) == (None, None, migrate.HEAD)
    assert done.describe() == f"created at revision {migrate.HEAD}"
    engine = _engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert migrate.upgrade(db_url).describe() == f"at revision {migrate.HEAD} (up to date)"
    assert migrate.current(db_url) == migrate.HEAD


def test_a_55f2ba1_store_with_rows_is_upgraded(db_url: str, tmp_path: Path) -> None:
    old = _load_55f2ba1(db_url, tmp_path)
    assert migrate.current(db_url) is None  # made by create_all: no alembic_version
    done = migrate.upgrade(db_url)
    assert (done.before, done.adopted, done.after) == (None, baseline.REVISION, migrate.HEAD)

    for table, rows in old.items():
        now = {tuple(r[c.name] for c in _pk(table)): r for r in _rows(db_url, table)}
        assert len(now) == len(rows) > 0, table
        for row in rows:
            kept = now[tuple(row[c.name] for c in _pk(table))]
            assert all(_same(v, kept[k]) for k, v in row.items()), (table, row, kept)
    jobs = {r["id"]: r for r in _rows(db_url, "jobs")}
    assert {j: r["resume_count"] for j, r in jobs.items()} == {
        j: (1 if j == "job_FIXTURE2" else 0) for j in FIXTURE_JOBS
    }
    engine = _engine(db_url)
    with engine.connect() as conn:
        found = sa.inspect(conn)
        indexes = {i["name"] for t in Base.metadata.tables for i in found.get_indexes(t)}
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
    assert {"ix_jobs_status", "ix_webhook_events_due", "ix_host_slots_expires_at"} <= indexes

    # what the API and the resume and webhook services do, on the upgraded store
    store = Store(db_url)
    alice = store.account_for_key(ALICE_KEY)
    assert alice is not None and alice.name == "alice"
    assert {j.id for j in store.nonfinal_jobs()} == {"job_FIXTURE0", "job_FIXTURE1", "job_FIXTURE6"}
    assert store.claim_resume("job_FIXTURE1", 1, "run-b") is True
    assert store.claim_resume("job_FIXTURE1", 1, "run-c") is False
    assert store.run_owner("job_FIXTURE1") == ("run-b", 1)
    assert store.mark_running("job_FIXTURE0", "run-a").status == "running"
    assert store.counters("job_FIXTURE1").done == 5
    due = datetime(2026, 12, 1, 9, 7, tzinfo=UTC)
    taken = store.claim_webhook_events(due, due + timedelta(minutes=1), 10)
    assert [e.id for e in taken] == ["whe_FIXTURE1"]
    job = store.insert_job(
        JobRow(id=new_id("job"), account_id=alice.id, concurrency=1, spec={}, urls_total=1)
    )
    assert store.get_job(job.id).resume_count == 0  # type: ignore[union-attr]


def _pk(table: str) -> list[sa.Column[Any]]:
    return list(baseline.metadata().tables[table].primary_key.columns)


def test_a_store_grown_by_the_old_column_adder_gets_its_nulls_filled(
    db_url: str, tmp_path: Path
) -> None:
    """Before migrations, a column the models gained was added to an old store as
    ``ALTER TABLE ADD COLUMN`` without a default: NULL on every old row, where the resume
    service compares ``resume_count`` with a number. The upgrade fills and constrains it."""
    _load_55f2ba1(db_url, tmp_path)
    engine = _engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_jobs_status"))  # and one it never added back
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN resume_count"))
        conn.execute(sa.text('ALTER TABLE jobs ADD COLUMN "resume_count" INTEGER'))  # as it did
        assert set(conn.execute(sa.text("SELECT resume_count FROM jobs")).scalars()) == {None}

    assert migrate.upgrade(db_url).adopted == baseline.REVISION
    assert {r["resume_count"] for r in _rows(db_url, "jobs")} == {0}
    with engine.connect() as conn:
        assert "ix_jobs_status" in {i["name"] for i in sa.inspect(conn).get_indexes("jobs")}
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("UPDATE jobs SET resume_count = NULL"))
    engine.dispose()
    assert Store(db_url).claim_resume("job_FIXTURE1", 1, "run-b") is True


def test_a_store_of_host_slots_time_is_stamped_there(db_url: str) -> None:
    engine = _engine(db_url)
    with engine.begin() as conn:
        baseline.metadata().create_all(conn)
        Base.metadata.tables["host_slots"].create(conn)
    engine.dispose()
    assert migrate.upgrade(db_url).adopted == "0002_host_slots"
    assert migrate.current(db_url) == migrate.HEAD


def test_a_database_that_is_not_a_shoal_store_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, colour TEXT)")
    con.close()
    with pytest.raises(migrate.StoreOutdated, match="lacks jobs.account_id"):
        migrate.upgrade(url)
    assert migrate.current(url) is None  # the failed upgrade left nothing behind


def test_two_migrators_at_once_migrate_once(db_url: str) -> None:
    """Two processes (two machines' APIs starting at once): one creates, the other finds it
    done; neither fails."""
    code = (
        "import sys; from shoal.store._migrate import upgrade; print(upgrade(sys.argv[1]).before)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    said = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert said == [migrate.HEAD, "None"]


def test_threads_of_one_process_take_turns(db_url: str) -> None:
    start = threading.Barrier(2)
    results: list[migrate.Upgraded | BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(migrate.upgrade(db_url))
        except BaseException as exc:  # the assertion below shows it
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, migrate.Upgraded) for r in results), results
    assert sorted(str(r.before) for r in results) == [migrate.HEAD, "None"]  # type: ignore[union-attr]


def test_a_migrator_waits_for_the_sqlite_write_lock(tmp_path: Path, monkeypatch) -> None:
    """The lock is taken before anything is read: while another connection holds the write
    lock, a migrator with a short wait gives up having created nothing."""
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    monkeypatch.setattr(migrate, "_SQLITE_LOCK_WAIT_S", 0.2)
    holder = sqlite3.connect(tmp_path / "shoal.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        migrate.upgrade(url)
    holder.execute("ROLLBACK")
    holder.close()
    assert migrate.current(url) is None
    assert migrate.upgrade(url).after == migrate.HEAD


def test_a_migrator_waits_for_the_postgres_advisory_lock(pg_server, monkeypatch) -> None:
    url = pg_server.new_database()
    holder = _engine(url)
    waiter: list[migrate.Upgraded] = []
    with holder.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": migrate._PG_LOCK})
        thread = threading.Thread(target=lambda: waiter.append(migrate.upgrade(url)))
        thread.start()
        waiting = sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        watcher = _engine(url)
        with watcher.connect() as w:
            while not w.execute(waiting).scalar():  # the migrator is queued on our lock
                pass
        watcher.dispose()
        assert not sa.inspect(conn).has_table("jobs") and not waiter
    thread.join()
    holder.dispose()
    assert waiter[0].before is None and migrate.current(url) == migrate.HEAD


# --- who migrates --------------------------------------------------------------------------


@pytest.fixture
def in_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000001")


def _stamp(url: str, revision: str) -> None:
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    engine = migrate._migrating_engine(url)
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), revision)
    engine.dispose()


def test_a_flow_run_refuses_an_old_schema_and_does_not_migrate(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_url).get_or_create_account("a")  # made by the API: at the head
    get_engine.cache_clear()
    _sessionmaker.cache_clear()  # a flow run is a new process
    _downgrade(db_url, "0002_host_slots")
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000001")
    with pytest.raises(migrate.StoreOutdated, match="run `shoal db upgrade`") as err:
        Store(db_url).get_job("job_X")  # the flow's first look at the store
    assert "is at schema 0002_host_slots, this code needs 0005" in str(err.value)
    assert migrate.current(db_url) == "0002_host_slots"
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID")
    get_engine(db_url)  # any other process upgrades it
    assert migrate.current(db_url) == migrate.HEAD


def test_a_store_at_0003_with_jobs_gains_schedules(db_url: str) -> None:
    """0004: the jobs of a 0003 store stay, as runs of no schedule; schedules work at once."""
    store = Store(db_url)
    alice, _ = store.get_or_create_account("alice")
    old = store.insert_job(
        JobRow(id=new_id("job"), account_id=alice.id, concurrency=1, spec={}, urls_total=1)
    )
    get_engine.cache_clear()
    _sessionmaker.cache_clear()
    _downgrade(db_url, "0003_server_defaults")
    assert "schedule_id" not in {r for r in _rows(db_url, "jobs")[0]}
    assert migrate.upgrade(db_url).before == "0003_server_defaults"
    (row,) = _rows(db_url, "jobs")
    assert row["id"] == old.id and row["schedule_id"] is None and row["changes"] is None
    _assert_schema_is_the_models(db_url)
    from shoal.store import ScheduleRow

    store.insert_schedule(
        ScheduleRow(id="sch_A", account_id=alice.id, name="nightly", interval_s=60, job={})
    )
    assert store.get_schedule("sch_A", alice.id).runs == 0  # type: ignore[union-attr]
    assert store.previous_run("sch_A", 1) is None


def test_a_store_at_0004_with_uploads_gains_their_screenshot_flag(db_url: str) -> None:
    """0005: an upload stored before is one whose rows ask for no screenshot (0), as the
    code before read it; a new upload records the flag."""
    from shoal.store import UploadRow

    store = Store(db_url)
    alice, _ = store.get_or_create_account("alice")

    def upload(uid: str, **kw: object) -> UploadRow:
        row = UploadRow(
            id=uid, account_id=alice.id, format="csv", size_bytes=1, lines=1, urls_valid=1,
            errors=[], fields={"price": "number"}, url="x", **kw,
        )  # fmt: skip
        return store.insert_upload(row)

    upload("upl_old")
    get_engine.cache_clear()
    _sessionmaker.cache_clear()
    _downgrade(db_url, "0004_schedules")
    assert "screenshots" not in _rows(db_url, "uploads")[0]
    assert migrate.upgrade(db_url).before == "0004_schedules"
    (row,) = _rows(db_url, "uploads")
    assert row["id"] == "upl_old" and row["screenshots"] == 0
    _assert_schema_is_the_models(db_url)
    upload("upl_new", screenshots=1)
    assert store.get_upload("upl_new", alice.id).screenshots == 1  # type: ignore[union-attr]


def test_a_flow_run_refuses_a_store_made_before_migrations(
    tmp_path: Path, in_flow_run: None
) -> None:
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    _load_55f2ba1(url, tmp_path)
    with pytest.raises(migrate.StoreOutdated, match="has not been migrated"):
        get_engine(url)
    assert migrate.current(url) is None


def test_a_flow_run_still_finds_no_store_where_there_is_none(
    tmp_path: Path, in_flow_run: None
) -> None:
    with pytest.raises(StoreNotFound):
        get_engine(f"sqlite:///{tmp_path / 'missing' / 'shoal.db'}")
    assert not (tmp_path / "missing").exists()


def test_a_store_newer_than_the_code_is_refused_everywhere(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_url).get_or_create_account("a")
    get_engine.cache_clear()
    _stamp(db_url, "0099_future")
    with pytest.raises(migrate.StoreOutdated, match="newer than this Shoal knows"):
        get_engine(db_url)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000001")
    with pytest.raises(migrate.StoreOutdated, match="newer than this Shoal knows"):
        get_engine(db_url)
    assert migrate.current(db_url) == "0099_future"


def test_the_sqlite_store_is_owner_only(tmp_path: Path, monkeypatch) -> None:
    """Whatever the umask: the store holds webhook secrets (its -wal/-shm take its mode)."""
    import os

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    old = os.umask(0o022)
    try:
        Store(f"sqlite:///{tmp_path / 'data' / 'shoal.db'}").get_or_create_account("a")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "data").iterdir()}
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert modes == {"shoal.db": 0o600, "shoal.db-wal": 0o600, "shoal.db-shm": 0o600}
