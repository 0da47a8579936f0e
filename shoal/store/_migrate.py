"""Schema migrations of the job store (Alembic, ``shoal/store/migrations/``), run from code.

Who migrates: ``shoal up``, ``shoal api`` and ``shoal services`` upgrade the store once, before
their processes start, and ``shoal db upgrade`` does it on demand; any other process that is not
a flow run upgrades a store it finds behind on first use (``get_engine``), so a new data folder
works from ``shoal keys create`` on. A flow run never migrates: a store behind the code is
``StoreOutdated`` there, naming the command to run.

One migrator at a time, and all or nothing. Alembic runs on one connection, in one
transaction, under a lock taken first thing in it:

- PostgreSQL: ``pg_advisory_xact_lock`` (released by the commit). Two APIs starting at once on
  two machines: the second waits, then reads the first one's revision and has nothing to do.
  PostgreSQL's DDL is transactional, so a failed upgrade leaves the old schema.
- SQLite: ``BEGIN IMMEDIATE``, the database's write lock, taken at the start of the
  transaction (pysqlite's own transaction handling is off, so the DDL is inside it too). The
  second migrator waits in ``busy_timeout``; readers go on reading the old schema (WAL).

A store made before migrations (tables, no ``alembic_version``) is recognised by its tables and
columns and stamped at the revision it matches (``_adopt``), then upgraded.
"""

from __future__ import annotations

import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

from shoal.settings import redact_url

if TYPE_CHECKING:
    from alembic.config import Config

#: every revision, oldest first; the last is the schema this code reads and writes
#: (a test holds this to the scripts in ``migrations/versions``)
REVISIONS = (
    "0001_baseline",
    "0002_host_slots",
    "0003_server_defaults",
    "0004_schedules",
    "0005_upload_screenshots",
)
HEAD = REVISIONS[-1]
MIGRATIONS = Path(__file__).with_name("migrations")
#: the advisory lock of PostgreSQL migrators (any fixed 64-bit number, the same in every Shoal)
_PG_LOCK = zlib.crc32(b"shoal job store migrations")
#: how long a SQLite migrator waits for the write lock: an upgrade copies tables, so longer
#: than a request waits
_SQLITE_LOCK_WAIT_S = 600.0
_ONE_PER_PROCESS = threading.Lock()
_VERSION_TABLE = "alembic_version"
_HOST_SLOTS = {"host", "holder", "slots", "wanted", "expires_at"}


class StoreOutdated(RuntimeError):
    """The job store's schema is not the one this code was written for."""


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade` did: the revision before (None: a new or pre-migrations store),
    the revision a pre-migrations store was recognised as, and the revision now."""

    before: str | None
    adopted: str | None
    after: str

    def describe(self) -> str:
        if self.before == self.after:
            return f"at revision {self.after} (up to date)"
        if self.adopted is not None:
            return f"made before migrations, recognised as {self.adopted}, upgraded to {self.after}"
        if self.before is None:
            return f"created at revision {self.after}"
        return f"upgraded from {self.before} to {self.after}"


def stored_revision(conn: Connection) -> str | None:
    """The store's revision (``alembic_version``), or None when it has none."""
    if not inspect(conn).has_table(_VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()


def outdated_message(url: str, revision: str | None) -> str | None:
    """Why a flow run must not use a store at ``revision``; None when it is the code's head."""
    where = redact_url(url)
    if revision == HEAD:
        return None
    if revision is None:
        return (
            f"the job store at {where} was made by an older Shoal and has not been migrated "
            f"(this code needs schema {HEAD}): run `shoal db upgrade`, or restart `shoal up` or "
            "`shoal api`, which upgrade it"
        )
    if revision not in REVISIONS:
        return (
            f"the job store at {where} is at schema {revision}, newer than this Shoal knows "
            f"(its newest is {HEAD}): run the same Shoal version on every machine"
        )
    return (
        f"the job store at {where} is at schema {revision}, this code needs {HEAD}: run "
        "`shoal db upgrade`, or restart `shoal up` or `shoal api`, which upgrade it"
    )


def require_current(engine: Engine, url: str) -> None:
    """Raise ``StoreOutdated`` unless the store is at the code's head (for flow runs)."""
    with engine.connect() as conn:
        problem = outdated_message(url, stored_revision(conn))
    if problem is not None:
        raise StoreOutdated(problem)


def ensure_current(engine: Engine, url: str) -> None:
    """Upgrade the store when it is not at the code's head (one SELECT when it is)."""
    with engine.connect() as conn:
        revision = stored_revision(conn)
    if revision != HEAD:
        upgrade(url)  # refuses a revision it does not know


def current(url: str) -> str | None:
    """The store's revision, without creating or changing anything (None: no store yet)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return stored_revision(conn)
    finally:
        engine.dispose()


def upgrade(url: str) -> Upgraded:
    """Bring the store at ``url`` to the code's head under the migration lock (module doc).

    An empty database gets every migration in order (never ``create_all``); a store made by a
    Shoal before migrations is stamped at the revision its tables match, then upgraded."""
    from alembic import command

    engine = _migrating_engine(url)
    try:
        # Alembic's ``op`` and ``context`` are process globals: threads take turns here too
        with _ONE_PER_PROCESS, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            before = stored_revision(conn)
            if before is not None and before not in REVISIONS:
                raise StoreOutdated(outdated_message(url, before))
            adopted = None
            config = _config(conn)
            if before is None and inspect(conn).has_table("jobs"):
                adopted = _adopt(conn)
                command.stamp(config, adopted)
            command.upgrade(config, "head")
            after = stored_revision(conn)
    finally:
        engine.dispose()
    assert after == HEAD, f"upgraded to {after}, expected {HEAD} (update REVISIONS)"
    return Upgraded(before, adopted, after)


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    # no alembic.ini: the scripts ship inside the package, wherever it is installed
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _migrating_engine(url: str) -> Engine:
    """An engine of its own for one upgrade: SQLite transactions start ``BEGIN IMMEDIATE``."""
    if not url.startswith("sqlite:///"):
        return create_engine(url, poolclass=NullPool)
    path = Path(url.removeprefix("sqlite:///"))
    private_file(path)
    args = {"timeout": _SQLITE_LOCK_WAIT_S, "check_same_thread": False}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)

    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # pysqlite would commit before DDL and BEGIN lazily
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _write_lock(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def private_file(path: Path) -> None:
    """Create ``path`` (and its folder) readable by the owner only, if it does not exist.

    SQLite makes its ``-wal`` and ``-shm`` files with the database file's mode, so a 0600
    database keeps them 0600 too, whatever the process's umask."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _adopt(conn: Connection) -> str:
    """The revision a store made before migrations matches, after giving it what the
    baseline has and it lacks (tables, nullable columns, indexes: what ``create_all`` and
    the old column-adder would have given it). A store lacking more is refused."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from .migrations import baseline

    ops = Operations(MigrationContext.configure(conn))
    found = inspect(conn)
    tables = set(found.get_table_names())
    for table in baseline.metadata().sorted_tables:
        if table.name not in tables:
            table.create(conn)
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        lacking = [c for c in table.columns if c.name not in have]
        if any(not c.nullable for c in lacking):
            names = ", ".join(f"{table.name}.{c.name}" for c in lacking if not c.nullable)
            raise StoreOutdated(
                f"the job store lacks {names}, which Shoal never added to an existing store; "
                "it was not made by Shoal"
            )
        for column in lacking:
            ops.add_column(table.name, Column(column.name, column.type, nullable=True))
        indexes = {i["name"] for i in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    if "host_slots" in tables:
        have = {c["name"] for c in found.get_columns("host_slots")}
        if not have >= _HOST_SLOTS:
            raise StoreOutdated(f"the job store's host_slots table lacks {_HOST_SLOTS - have}")
        return "0002_host_slots"
    return baseline.REVISION
