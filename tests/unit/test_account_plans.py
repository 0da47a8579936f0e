"""Plans: the operator's defaults, per-account values, and the concurrent-jobs limit (429)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.account_plans import plan_for
from shoal.errors import LimitExceeded
from shoal.jobs import job_row
from shoal.store._db import session_scope
from shoal.store._tables import AccountRow
from tests.unit.test_api import assert_problem, post_job, urls

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")


def _set_plan(store, account_id: str, plan: dict) -> None:
    with session_scope(store.url) as s:
        s.get(AccountRow, account_id).plan = plan


def test_plan_defaults_come_from_settings_and_accounts_override_within_caps(settings, monkeypatch):
    assert plan_for({}, settings).as_dict() == {
        "max_urls_per_job": 1_000_000,
        "max_concurrent_jobs": 10,
        "concurrency_cap": 256,
        "retention_days": 30,
    }
    own = plan_for({"max_concurrent_jobs": 2, "concurrency_cap": 999, "other": 1}, settings)
    assert (own.max_concurrent_jobs, own.concurrency_cap) == (2, 256)  # never above the operator
    monkeypatch.setenv("SHOAL_MAX_CONCURRENT_JOBS", "3")
    monkeypatch.setenv("SHOAL_RETENTION_DAYS", "7")
    from shoal.settings import Settings

    changed = plan_for({}, Settings())
    assert (changed.max_concurrent_jobs, changed.retention_days) == (3, 7)


def test_account_shows_its_effective_plan(client, alice, store):
    _set_plan(store, alice.account.id, {"max_concurrent_jobs": 4})
    plan = client.get("/v1/account", headers=alice.headers).json()["plan"]
    assert plan["max_concurrent_jobs"] == 4 and plan["concurrency_cap"] == 256


def test_one_job_over_the_concurrent_jobs_limit_is_429_and_leaves_nothing(
    client, alice, bob, store, settings, make_job
):
    _set_plan(store, alice.account.id, {"max_concurrent_jobs": 2})
    make_job(alice.account, status="running")
    make_job(alice.account, status="completed")  # finished jobs do not count
    assert post_job(client, alice, {"urls": urls(2)}).status_code == 202
    before = {r.id for r in store.list_jobs(alice.account.id, None, 100, 0)[0]}
    r = post_job(client, alice, {"urls": urls(2)})
    problem = assert_problem(r, 429)
    assert r.headers["Retry-After"].isdigit() and "2 at once" in problem["detail"]
    after = {r.id for r in store.list_jobs(alice.account.id, None, 100, 0)[0]}
    assert after == before  # no job row
    staged = {p.name for p in (Path(settings.storage_url) / "jobs").iterdir()}
    assert staged <= before  # no staged input of the refused job
    # another account is not affected
    assert post_job(client, bob, {"urls": urls(1)}).status_code == 202


def test_idempotent_replay_is_not_refused_by_the_limit(client, alice, store):
    _set_plan(store, alice.account.id, {"max_concurrent_jobs": 1})
    body = {"urls": urls(1)}
    first = client.post("/v1/jobs", json=body, headers={**alice.headers, "Idempotency-Key": "once"})
    assert first.status_code == 202
    again = client.post("/v1/jobs", json=body, headers={**alice.headers, "Idempotency-Key": "once"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert_problem(post_job(client, alice, body), 429)


def test_concurrent_inserts_never_pass_the_limit(store, alice):
    def insert(_: int) -> bool:
        row = job_row(alice.account.id, None, "normal", {"concurrency": 1}, urls_total=1)
        try:
            store.insert_job(row, max_active=3)
            return True
        except LimitExceeded:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(insert, range(16)))
    assert results.count(True) == 3
    assert store.count_active_jobs(alice.account.id) == 3


@pytest.mark.parametrize("status", ["queued", "running"])
def test_queued_and_running_both_count(store, alice, make_job, status):
    make_job(alice.account, status=status)
    assert store.count_active_jobs(alice.account.id) == 1


def test_operator_sets_an_account_plan_from_the_command_line(settings, store):
    from typer.testing import CliRunner

    from shoal.cli import app

    args = ["accounts", "plan", "--account", "ops", "--data-dir", str(settings.data_dir)]
    out = CliRunner().invoke(app, [*args, "--max-concurrent-jobs", "3"])
    assert out.exit_code == 0, out.output
    assert "max_concurrent_jobs = 3\n" in out.output
    assert "retention_days = 30  (default)" in out.output
    CliRunner().invoke(app, [*args, "--retention-days", "1"])
    account, _ = store.get_or_create_account("ops")
    assert account.plan == {"max_concurrent_jobs": 3, "retention_days": 1}
    CliRunner().invoke(app, [*args, "--reset"])
    assert store.get_or_create_account("ops")[0].plan == {}
