"""``shoal keys list|revoke``, ``shoal accounts remove``, ``shoal db upgrade|current`` and the
owner-only files of every command, through typer's CliRunner on the real job store (SQLite and
PostgreSQL) and the real local results folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import shoal.cli as cli
from shoal.storage import get_storage
from shoal.store import (
    SCHEMA_HEAD,
    Counters,
    UploadRow,
    WebhookEventRow,
    new_id,
    store_revision,
)
from shoal.store._db import session_scope

STORES = ("sqlite", "postgres")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    """Every command sets the umask 077 in this process; give the test session its own back."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def shoal(*args: str) -> tuple[int, str]:
    done = runner.invoke(cli.app, list(args))
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_list_shows_ids_and_prefixes_never_the_keys(settings, store, alice) -> None:
    second = store.create_key(alice.account.id)
    code, out = shoal("keys", "list", "--account", "a")
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 2
    assert [line.split()[1] for line in lines] == [alice.key[:8] + "...", second[:8] + "..."]
    assert alice.key not in out and second not in out and alice.key[:9] not in out
    assert shoal("keys", "list", "--account", "nobody")[0] == 1


def test_a_revoked_key_is_refused_at_once(settings, store, alice, bob, client) -> None:
    other = store.create_key(alice.account.id)
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    [row] = [k for k in store.list_keys(alice.account.id) if k.prefix == alice.key[:8]]
    code, out = shoal("keys", "revoke", row.prefix)
    assert code == 0 and f"revoked {row.id}" in out and "of a" in out, out
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 401
    # the account's other key and other accounts' keys still work
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200
    # by the whole key, by id; an unknown key is an error
    assert shoal("keys", "revoke", other)[0] == 0
    assert shoal("keys", "revoke", other)[0] == 1
    [bobs] = store.list_keys(bob.account.id)
    assert shoal("keys", "revoke", bobs.id)[0] == 0
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 401


def test_a_prefix_that_names_several_keys_revokes_none(settings, store, alice) -> None:
    store.create_key(alice.account.id)
    with session_scope(store.url) as s:  # two keys with one prefix (rare, but possible)
        s.execute(sa.text("UPDATE api_keys SET prefix = 'sk_same1'"))
    code, out = shoal("keys", "revoke", "sk_same1")
    assert code == 1 and "2 keys have that prefix" in out, out
    assert len(store.list_keys(alice.account.id)) == 2


def _account_rows(url: str, account_id: str) -> dict[str, int]:
    counts = {}
    with session_scope(url) as s:
        for table in ("api_keys", "jobs", "idempotency_keys", "webhook_events", "uploads"):
            counts[table] = s.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE account_id = :a"), {"a": account_id}
            )
        counts["accounts"] = s.scalar(
            sa.text("SELECT count(*) FROM accounts WHERE id = :a"), {"a": account_id}
        )
    return counts


def test_removing_an_account_with_jobs_running_is_refused_unless_cancelled(
    settings, store, alice, bob, make_job
) -> None:
    storage = get_storage(settings)
    running = make_job(alice.account, status="running")
    ended = make_job(alice.account, status="completed")
    kept = make_job(bob.account, status="completed")
    for job in (running, ended, kept):
        storage.write_bytes_atomic(storage.url("jobs", job.id, "output", "r.ndjson"), b"{}\n")
    upload = UploadRow(
        id=new_id("upl"),
        account_id=alice.account.id,
        format="ndjson",
        size_bytes=1,
        lines=1,
        urls_valid=1,
        url=storage.url("uploads", "x"),
    )
    store.insert_upload(upload)
    storage.write_bytes_atomic(storage.url("uploads", upload.id, "urls.ndjson"), b"x\n")
    store.record_chunk(running.id, 0, Counters(1, 0, 1), finished=False, exact=True)
    with session_scope(store.url) as s:
        s.add(
            WebhookEventRow(
                id=new_id("whe"),
                job_id=ended.id,
                account_id=alice.account.id,
                type="job.completed",
                url="https://hooks.example/",
                payload="{}",
            )
        )

    code, out = shoal("accounts", "remove", "a", "--yes")
    assert code == 1 and "1 jobs queued or running" in out and "--cancel-jobs" in out, out
    assert _account_rows(store.url, alice.account.id)["api_keys"] == 1  # nothing removed

    code, out = shoal("accounts", "remove", "a", "--cancel-jobs", "--yes")
    assert code == 0, out
    assert "2 jobs (1 cancelled)" in out
    assert set(_account_rows(store.url, alice.account.id).values()) == {0}
    assert store.counters(running.id).done == 0  # its chunk counters went too
    assert store.cancel_requested(running.id)  # a run in flight stops at its next chunk
    assert not storage.exists(storage.url("jobs", running.id))
    assert not storage.exists(storage.url("jobs", ended.id))
    assert not storage.exists(storage.url("uploads", upload.id))
    # bob is untouched
    assert store.get_job(kept.id) is not None and storage.exists(storage.url("jobs", kept.id))
    assert store.account_for_key(bob.key) is not None
    assert store.account_for_key(alice.key) is None
    assert shoal("accounts", "remove", "a", "--yes")[0] == 1  # gone


def test_removing_an_account_asks_first(settings, store, alice) -> None:
    done = runner.invoke(cli.app, ["accounts", "remove", "a"], input="n\n")
    assert done.exit_code == 1 and "Aborted" in done.output
    assert store.account_for_key(alice.key) is not None


def test_db_upgrade_and_current(settings, tmp_path: Path) -> None:
    if settings.database_url:
        pytest.skip("the SQLite file's absence is the case here")
    assert store_revision(settings) is None
    code, out = shoal("db", "current")
    assert code == 1 and "store: none" in out and f"code:  {SCHEMA_HEAD}" in out, out
    code, out = shoal("db", "upgrade")
    assert code == 0 and f"created at revision {SCHEMA_HEAD}" in out, out
    code, out = shoal("db", "current")
    assert code == 0 and f"store: {SCHEMA_HEAD}" in out, out
    assert "up to date" in shoal("db", "upgrade")[1]


def _stamp(url: str, revision: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_db_upgrade_refuses_a_store_newer_than_the_code(settings, store, alice) -> None:
    _stamp(store.url, "0099_future")
    try:
        code, out = shoal("db", "upgrade")
        assert code == 1 and "newer than this Shoal knows" in out, out
        assert store_revision(settings) == "0099_future"
    finally:
        _stamp(store.url, SCHEMA_HEAD)  # for the fixture's clean-up


def test_the_api_role_upgrades_the_store_before_it_starts(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def exec_(argv: list[str]) -> None:
        seen.append(store_revision(settings))
        raise SystemExit(0)

    monkeypatch.setattr(cli, "_exec", exec_)
    for name, value in {
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "SHOAL_DATABASE_URL": settings.db_url,
        "SHOAL_RESULTS_URL": settings.storage_url,
        "SHOAL_PUBLIC_URL": "http://127.0.0.1:8000",
    }.items():
        monkeypatch.setenv(name, value)
    assert store_revision(settings) is None
    code, out = shoal("api")
    assert code == 0 and seen == [SCHEMA_HEAD], out
    assert "job store" in out and SCHEMA_HEAD in out


def test_shoal_up_upgrades_the_store_before_any_child_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    started: list[tuple[str, str | None]] = []

    class Supervisor:
        def __init__(self, **_: object) -> None:
            self.children: dict[str, object] = {}

        def install_signals(self) -> None: ...

        def __enter__(self) -> Supervisor:
            return self

        def __exit__(self, *_: object) -> None: ...

        def start(self, name: str, argv: list[str]) -> None:
            started.append((name, store_revision(cli.Settings(data_dir=data))))

        def wait(self, ready: object) -> None: ...

        def run(self) -> None:
            raise cli.Stopped

    monkeypatch.setattr(cli, "Supervisor", Supervisor)
    monkeypatch.delenv("SHOAL_DATABASE_URL", raising=False)
    code, out = shoal("up", "--data-dir", str(data))
    assert code == 0, out
    assert [name for name, _ in started] == ["prefect", "services", "worker", "api"]
    assert {revision for _, revision in started} == {SCHEMA_HEAD}
    assert mode(data) == 0o700 and mode(data / "shoal.db") == 0o600


# --- owner-only files --------------------------------------------------------------------


def test_commands_make_owner_only_files(settings) -> None:
    if settings.database_url:
        pytest.skip("SQLite files")
    data = settings.data_dir
    code, out = shoal("keys", "create", "--account", "x")
    assert code == 0, out
    assert os.umask(0o022) == cli.UMASK  # the command set it (the fixture restores ours)
    assert mode(data) == 0o700
    files = {p.name: mode(p) for p in data.iterdir()}
    assert files and set(files.values()) == {0o600}, files
    assert "shoal.db" in files


def test_a_data_dir_readable_by_others_is_tightened_with_a_warning(settings) -> None:
    data = settings.data_dir
    data.mkdir(mode=0o755, parents=True)
    data.chmod(0o755)
    done = runner.invoke(cli.app, ["keys", "create", "--account", "x"])
    assert done.exit_code == 0, done.output
    assert "was readable by others (mode 755)" in done.output
    assert mode(data) == 0o700
    done = runner.invoke(cli.app, ["keys", "create", "--account", "x"])
    assert "readable by others" not in done.output


def test_local_results_are_owner_only_whatever_the_umask(settings, tmp_path: Path) -> None:
    storage = get_storage(settings)
    out = storage.url("jobs", "job_X", "output", "r.ndjson")
    storage.write_bytes_atomic(out, b"{}\n")
    built = tmp_path / "built.parquet"
    built.write_bytes(b"x")  # as DuckDB/Polars leave it: the umask's 0644
    storage.put_file(str(built), storage.url("jobs", "job_X", "output", "r.parquet"))
    storage.copy(out, storage.url("jobs", "job_Y", "output", "r.ndjson"))
    root = Path(storage.root)
    assert mode(root) == 0o700
    for path in root.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert len([p for p in root.rglob("*") if p.is_file()]) == 3


def test_under_the_cli_umask_logs_and_childrens_files_are_owner_only(tmp_path: Path) -> None:
    """What ``shoal up``'s supervisor and its children write, under the umask every command
    sets: the log folder and logs, and a file a child (another program) makes."""
    import sys

    from shoal.supervisor import Supervisor

    os.umask(cli.UMASK)
    made = tmp_path / "made-by-child"
    sup = Supervisor(env=dict(os.environ), logs=tmp_path / "logs", echo=lambda _: None)
    with sup:
        child = sup.start("c", [sys.executable, "-c", f"print('hi'); open({str(made)!r}, 'w')"])
        assert child.proc is not None and child.proc.wait() == 0
    assert (tmp_path / "logs" / "c.log").read_text().startswith("hi")
    assert mode(tmp_path / "logs") == 0o700
    assert mode(tmp_path / "logs" / "c.log") == 0o600 and mode(made) == 0o600
