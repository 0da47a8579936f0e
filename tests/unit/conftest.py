"""Fixtures for unit tests: settings on a tmp folder, the job store, accounts and an API client."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from shoal.settings import Settings, get_settings
from shoal.storage import get_storage
from shoal.store import AccountRow, JobRow, Store, UploadRow, get_store, new_id, utcnow
from shoal.store._db import get_engine
from tests.sites.hostile import HostileSite
from tests.sites.tls import TestCA


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``STORES = ("sqlite", "postgres")`` runs each of its tests that use the
    job store against both: SQLite in ``tmp_path`` and a real PostgreSQL (``pg_server``)."""
    backends = getattr(metafunc.module, "STORES", None)
    if backends and "settings" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", backends, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def settings(tmp_path, monkeypatch, request, store_backend) -> Iterator[Settings]:
    """Settings read from env pointing at ``tmp_path`` (and, for ``postgres``, at a new
    database of the session's PostgreSQL); the cache is cleared before and after."""
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHOAL_SIGNING_SECRET", "test-secret")
    database = None
    if store_backend == "postgres":
        database = request.getfixturevalue("pg_server").new_database()
        monkeypatch.setenv("SHOAL_DATABASE_URL", database)
    get_settings.cache_clear()
    try:
        current = get_settings()
        assert current.db_url.startswith("postgresql") == (store_backend == "postgres")
        yield current
    finally:
        get_settings.cache_clear()
        if database is not None:
            get_engine(database).dispose()  # its connections, before the next test's database


@pytest.fixture
def store(settings) -> Store:
    return get_store(settings)


@dataclass
class Caller:
    account: AccountRow
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def alice(store) -> Caller:
    account, _ = store.get_or_create_account("a")
    return Caller(account, store.create_key(account.id))


@pytest.fixture
def bob(store) -> Caller:
    account, _ = store.get_or_create_account("b")
    return Caller(account, store.create_key(account.id))


@pytest.fixture
def make_job(store) -> Callable[..., JobRow]:
    """Insert a job row directly (no API, no Prefect); keyword arguments set row fields."""

    def _make(account: AccountRow, **values: Any) -> JobRow:
        row = JobRow(
            id=new_id("job"),
            account_id=account.id,
            name=values.pop("name", None),
            status=values.pop("status", "queued"),
            priority="normal",
            concurrency=4,
            spec={"defaults": {}, "concurrency": 4, "output": {}, "fields": {}},
            urls_total=values.pop("urls_total", 1),
            created_at=values.pop("created_at", utcnow() - timedelta(minutes=1)),
        )
        for k, v in values.items():
            setattr(row, k, v)
        return store.insert_job(row)

    return _make


@pytest.fixture
def make_upload(settings, store) -> Callable[..., UploadRow]:
    """Store an NDJSON upload directly (its file and its row, no API), made at ``created_at``."""
    storage = get_storage(settings)

    def _make(
        account: AccountRow, upload_id: str, created_at: datetime, body: bytes = b"{}\n"
    ) -> UploadRow:
        url = storage.url("uploads", upload_id, "input.ndjson")
        storage.write_bytes_atomic(url, body)
        row = UploadRow(
            id=upload_id,
            account_id=account.id,
            format="ndjson",
            size_bytes=len(body),
            lines=1,
            urls_valid=1,
            url=url,
            created_at=created_at,
        )
        return store.insert_upload(row)

    return _make


@dataclass
class FlowStarter:
    calls: list[JobRow]
    fail: bool = False
    busy: bool = False  # Prefect up but answering 503 past start_flow_run's retries

    async def __call__(self, job: JobRow, settings: Settings) -> str:
        self.calls.append(job)
        if self.fail:
            raise ConnectionError("prefect is down")
        if self.busy:
            from deployments.launch import PrefectBusy

            raise PrefectBusy(503)
        return f"fake-flow-run-{len(self.calls)}"


@pytest.fixture
def flow_starter(monkeypatch) -> FlowStarter:
    """Replaces the Prefect call of ``POST /v1/jobs`` with a recorder returning a fake id."""
    import api.routers.jobs

    starter = FlowStarter(calls=[])
    monkeypatch.setattr(api.routers.jobs, "start_flow_run", starter)
    return starter


@pytest.fixture
def client(settings, flow_starter):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def ca() -> Iterator[TestCA]:
    """A test certificate authority (``tests/sites/tls.py``) the engine is told to trust."""
    authority = TestCA()
    yield authority
    authority.cleanup()


@pytest.fixture(scope="module")
def tls_site(ca: TestCA) -> Iterator[HostileSite]:
    """The hostile site over TLS with a certificate of ``ca``."""
    s = HostileSite(tls=ca.server_context()).start()
    yield s
    s.stop()
