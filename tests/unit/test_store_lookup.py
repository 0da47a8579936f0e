"""A flow run looks its job up and never creates a job store (a worker pointed at the wrong
store says so); the messages name the store without its password."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from shoal.settings import Settings, missing_job_message, redact_url
from shoal.store._db import StoreNotFound, get_engine


@pytest.fixture
def in_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000001")


def test_a_flow_run_does_not_create_a_missing_sqlite_store(
    tmp_path: Path, in_flow_run: None
) -> None:
    db = tmp_path / "checkout" / ".shoal" / "shoal.db"
    with pytest.raises(StoreNotFound) as err:
        get_engine(f"sqlite:///{db}")
    assert f"no job store at sqlite:///{db}" in str(err.value)
    assert "SHOAL_DATABASE_URL" in str(err.value) and "SHOAL_RESULTS_URL" in str(err.value)
    assert not (tmp_path / "checkout").exists()


def test_a_flow_run_does_not_add_tables_to_a_foreign_database(
    tmp_path: Path, in_flow_run: None
) -> None:
    db = tmp_path / "other.db"
    create_engine(f"sqlite:///{db}").connect().close()  # a database, but not a job store
    with pytest.raises(StoreNotFound, match="no jobs table"):
        get_engine(f"sqlite:///{db}")
    from sqlalchemy import inspect

    assert inspect(create_engine(f"sqlite:///{db}")).get_table_names() == []


def test_a_flow_run_uses_an_existing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    get_engine(url)  # made by the API (not a flow run)
    get_engine.cache_clear()
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000001")
    assert get_engine(url).url.database == str(tmp_path / "shoal.db")


def test_outside_a_flow_run_the_store_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    db = tmp_path / "new" / "shoal.db"
    get_engine(f"sqlite:///{db}")
    assert db.exists()


def test_messages_name_the_store_without_its_password() -> None:
    url = "postgresql+psycopg://shoal:s3cret@db.internal:5433/jobs?sslmode=require"
    assert redact_url(url) == "postgresql+psycopg://shoal@db.internal:5433/jobs?sslmode=require"
    assert redact_url("sqlite:////srv/shoal/shoal.db") == "sqlite:////srv/shoal/shoal.db"
    msg = missing_job_message(Settings(database_url=url), "job_X")
    assert "s3cret" not in msg
    assert msg.startswith("no job job_X in the job store postgresql+psycopg://shoal@db.internal")
    assert "SHOAL_DATABASE_URL" in msg and "SHOAL_RESULTS_URL" in msg
    default = missing_job_message(Settings(data_dir=Path("/srv/x")), "job_X")
    assert "sqlite:////srv/x/shoal.db (SHOAL_DATABASE_URL unset: SQLite in the data dir)" in default
