"""``Idempotency-Key`` on ``POST /v1/jobs``: replay, mismatch, scope, expiry and races."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from shoal.contract import JobCreate
from shoal.jobs import job_row
from shoal.settings import Settings
from shoal.store import IdempotencyRow, JobRow, Store, utcnow
from shoal.store._db import session_scope
from shoal.submit import body_hash

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")

PROBLEM = "application/problem+json"
BODY = {"name": "idem", "input": {"urls": ["https://example.com/a", "https://example.com/b"]}}


def post(client, caller, body=BODY, key: str | None = "k-1") -> httpx.Response:
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/jobs", headers=headers, json=body)


def job_ids(store: Store, account_id: str) -> list[str]:
    rows, _ = store.list_jobs(account_id, None, 100, 0)
    return [r.id for r in rows]


def test_same_key_same_body_returns_the_original_job_with_200(client, alice, store, flow_starter):
    first = post(client, alice)
    assert first.status_code == 202, first.text
    again = post(client, alice)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["urls_total"] == 2 and again.json()["name"] == "idem"
    assert job_ids(store, alice.account.id) == [first.json()["id"]]
    assert len(flow_starter.calls) == 1  # no second flow run


def test_replay_shows_the_job_as_it_is_now(client, alice, store):
    first = post(client, alice).json()
    store.update_job(first["id"], status="running", started_at=utcnow())
    again = post(client, alice)
    assert again.status_code == 200 and again.json()["status"] == "running"


def test_key_order_and_spacing_do_not_change_the_body(client, alice, store):
    assert post(client, alice).status_code == 202
    reordered = {"input": BODY["input"], "name": "idem", "concurrency": 32}  # 32 is the default
    raw = json.dumps(reordered, indent=3).encode()
    r = client.post(
        "/v1/jobs",
        headers={**alice.headers, "Idempotency-Key": "k-1", "Content-Type": "application/json"},
        content=raw,
    )
    assert r.status_code == 200, r.text
    assert len(job_ids(store, alice.account.id)) == 1


def test_same_key_different_body_is_409(client, alice, store, flow_starter):
    first = post(client, alice).json()
    other = {**BODY, "concurrency": 4}
    r = post(client, alice, other)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["status"] == 409 and "Idempotency-Key" in problem["detail"]
    assert job_ids(store, alice.account.id) == [first["id"]]
    assert len(flow_starter.calls) == 1


def test_keys_are_per_account(client, alice, bob, store):
    a = post(client, alice)
    b = post(client, bob)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]
    # bob's key with another body is no conflict for alice, and the other way round
    assert post(client, bob, {**BODY, "name": "bob's"}, key="k-2").status_code == 202
    assert post(client, alice, key="k-2").status_code == 202
    assert len(job_ids(store, alice.account.id)) == 2 and len(job_ids(store, bob.account.id)) == 2


def test_without_a_key_every_post_is_a_new_job(client, alice, store):
    ids = {post(client, alice, key=None).json()["id"] for _ in range(2)}
    assert len(ids) == 2


def test_different_keys_make_different_jobs(client, alice):
    assert post(client, alice, key="x").json()["id"] != post(client, alice, key="y").json()["id"]


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_empty_or_too_long_key_is_422_naming_the_header(client, alice, flow_starter, key):
    r = post(client, alice, key=key)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["errors"]] == ["Idempotency-Key"]
    assert not flow_starter.calls


def test_key_of_255_chars_is_accepted(client, alice):
    assert post(client, alice, key="k" * 255).status_code == 202
    assert post(client, alice, key="k" * 255).status_code == 200


def test_invalid_body_with_a_key_is_422_and_does_not_take_the_key(client, alice):
    r = post(client, alice, {"input": {"urls": ["ftp://example.com"]}})
    assert r.status_code == 422
    assert post(client, alice).status_code == 202


def test_expired_key_creates_a_new_job(client, alice, store, settings):
    first = post(client, alice).json()
    still = utcnow() - timedelta(seconds=settings.idempotency_ttl_s - 60)
    _age_keys(store, still)
    assert post(client, alice).json()["id"] == first["id"]  # within the TTL

    _age_keys(store, utcnow() - timedelta(seconds=settings.idempotency_ttl_s + 1))
    renamed = {**BODY, "name": "a new body is fine after expiry"}
    r = post(client, alice, renamed)
    assert r.status_code == 202 and r.json()["id"] != first["id"]
    assert post(client, alice, renamed).json()["id"] == r.json()["id"]  # the key moved on


def test_ttl_setting(monkeypatch, settings, client, alice, store):
    from shoal.settings import get_settings

    monkeypatch.setenv("SHOAL_IDEMPOTENCY_TTL_S", "60")
    get_settings.cache_clear()
    assert get_settings().idempotency_ttl_s == 60
    first = post(client, alice).json()
    _age_keys(store, utcnow() - timedelta(seconds=61))
    assert post(client, alice).json()["id"] != first["id"]


def test_prefect_down_releases_the_key(client, alice, store, flow_starter):
    flow_starter.fail = True
    r = post(client, alice)
    assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM)
    failed = job_ids(store, alice.account.id)
    assert len(failed) == 1 and store.get_job(failed[0]).status == "failed"
    # the caller retries with the same key once Prefect is back: a job that runs
    flow_starter.fail = False
    again = post(client, alice)
    assert again.status_code == 202 and again.json()["id"] != failed[0]
    assert store.get_job(again.json()["id"]).flow_run_id is not None


def test_body_hash_is_canonical():
    a = JobCreate.model_validate({"urls": ["https://e.com"], "name": "n"})
    b = JobCreate.model_validate({"name": "n", "urls": ["https://e.com"], "priority": "normal"})
    c = JobCreate.model_validate({"name": "n", "urls": ["https://e.com"], "priority": "high"})
    assert body_hash(a) == body_hash(b) != body_hash(c)
    # values orjson would refuse still hash (validation answers 422 later)
    big = JobCreate.model_validate({"urls": [{"url": "https://e.com", "meta": 2**70}]})
    assert len(body_hash(big)) == 64


def test_openapi_documents_the_header(client):
    spec = client.get("/v1/openapi.json").json()
    params = spec["paths"]["/v1/jobs"]["post"]["parameters"]
    header = next(p for p in params if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and header["schema"]["anyOf"][0]["maxLength"] == 255
    assert "200" in spec["paths"]["/v1/jobs"]["post"]["responses"]


def test_readme_documents_the_ttl_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = re.search(r"^\| `SHOAL_IDEMPOTENCY_TTL_S` \| `(\d+)` \|", readme, re.M)
    assert row is not None
    default = Settings.model_fields["idempotency_ttl_s"].default
    assert int(row.group(1)) == default >= 86_400  # at least 24 h


# --- races --------------------------------------------------------------------------------


def test_two_concurrent_identical_posts_make_one_job(client, alice, store, flow_starter):
    for n in range(5):
        key = f"race-{n}"
        with ThreadPoolExecutor(2) as pool:
            barrier = threading.Barrier(2)

            def fire(key: str = key, barrier: threading.Barrier = barrier) -> httpx.Response:
                barrier.wait()
                return post(client, alice, key=key)

            results = list(pool.map(lambda _: fire(), range(2)))
        assert sorted(r.status_code for r in results) == [200, 202], [r.text for r in results]
        assert results[0].json()["id"] == results[1].json()["id"]
    assert len(job_ids(store, alice.account.id)) == 5
    assert len(flow_starter.calls) == 5


def test_race_lost_at_insert_returns_the_winners_job_before_its_flow_run_starts(
    client, alice, store, flow_starter, monkeypatch, settings
):
    """Both requests pass the lookup; one commits the key first and is slow to start its flow
    run: the other answers with that job (200) and starts nothing."""
    both_looked = threading.Barrier(2, timeout=10)
    original = Store.insert_job_once

    def insert_after_both_looked(self, row, *args, **kw):  # type: ignore[no-untyped-def]
        both_looked.wait()
        return original(self, row, *args, **kw)

    monkeypatch.setattr(Store, "insert_job_once", insert_after_both_looked)
    starting = threading.Event()
    release = threading.Event()
    calls = flow_starter.calls

    async def slow_start(job: JobRow, _settings) -> str:  # type: ignore[no-untyped-def]
        calls.append(job)
        starting.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "fake-flow-run-slow"

    import api.routers.jobs

    monkeypatch.setattr(api.routers.jobs, "start_flow_run", slow_start)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(post, client, alice) for _ in range(2)]
        assert starting.wait(10)
        # the winner is inside start_flow_run: the loser answers meanwhile
        done, _ = wait(futures, timeout=10, return_when=FIRST_COMPLETED)
        assert len(done) == 1
        loser = done.pop()
        lost = loser.result()
        assert lost.status_code == 200, lost.text
        assert store.get_job(lost.json()["id"]).flow_run_id is None  # not started yet
        release.set()
        won = next(f for f in futures if f is not loser).result(timeout=10)
    assert won.status_code == 202 and won.json()["id"] == lost.json()["id"]
    assert len(calls) == 1
    assert job_ids(store, alice.account.id) == [won.json()["id"]]
    assert store.get_job(won.json()["id"]).flow_run_id == "fake-flow-run-slow"
    # the loser's staged input was removed
    from shoal.storage import get_storage

    storage = get_storage(settings)
    staged = [Path(u).name for u in storage.glob(storage.url("jobs", "*"))]
    assert staged == [won.json()["id"]]


def test_store_insert_job_once_under_threads(store, alice):
    barrier = threading.Barrier(8, timeout=10)

    def insert(_: int) -> tuple[str, str]:
        row = job_row(alice.account.id, None, "normal", {"concurrency": 1}, urls_total=1)
        barrier.wait()
        held = store.insert_job_once(row, "same", "h", not_before=utcnow() - timedelta(seconds=60))
        return row.id, held.job_id

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(insert, range(8)))
    winners = {held for _, held in results}
    assert len(winners) == 1
    assert job_ids(store, alice.account.id) == list(winners)
    assert sum(mine == held for mine, held in results) == 1


def _age_keys(store: Store, created_at) -> None:  # type: ignore[no-untyped-def]
    with session_scope(store.url) as s:
        s.execute(update(IdempotencyRow).values(created_at=created_at))
