"""Engine and sessions for the job store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from shoal.settings import STORE_HINT, redact_url

from ._migrate import ensure_current, private_file, require_current
from ._tables import JobRow


class StoreNotFound(LookupError):
    """A flow run found no job store where its settings point (see ``get_engine``)."""


def _in_flow_run() -> bool:
    # Prefect sets it in every flow-run process it starts, by a worker or a served flow
    return bool(os.environ.get("PREFECT__FLOW_RUN_ID"))


def _not_found(url: str, what: str) -> StoreNotFound:
    return StoreNotFound(
        f"no job store at {redact_url(url)} ({what}); a flow run looks its job up and never "
        f"creates a store: {STORE_HINT}"
    )


@lru_cache
def get_engine(url: str) -> Engine:
    """One engine per URL and process, on a store at the code's schema revision.

    Outside a flow run a missing or older store is created or upgraded first, by the
    migrations (``shoal.store._migrate``: one migrator at a time, under a lock).

    A flow run never creates or migrates: its job was written by the API before the run was
    started, so a missing store means the worker points somewhere else (a process worker
    started with only ``PREFECT_API_URL`` looks in ``.shoal/`` of its working directory). There
    a missing SQLite file or a database without Shoal's tables raises ``StoreNotFound``, naming
    the store and what to set, and a store behind the code raises ``StoreOutdated`` naming
    ``shoal db upgrade``: acting on an old schema would fail halfway through a job."""
    lookup_only = _in_flow_run()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if lookup_only and not path.exists():
            raise _not_found(url, "the file does not exist")
        private_file(path)  # the store holds webhook secrets: owner-only from the start
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while the worker writes counters from another process.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        if not lookup_only:
            ensure_current(engine, url)
        elif not inspect(engine).has_table(JobRow.__tablename__):
            raise _not_found(url, "it has no jobs table")
        else:
            require_current(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


@lru_cache
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = _sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
