"""``POST /v1/jobs/{id}/retry``: a new job of exactly the errored URLs of a finished job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal import jobs
from shoal.output import part_url, write_part
from shoal.storage import get_storage
from shoal.store import utcnow

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")

PROBLEM = "application/problem+json"
SPEC = {
    "defaults": {"timeout_s": 7, "selectors": {"name": "h1"}, "headers": {"X-A": "1"}},
    "concurrency": 12,
    "output": {"format": "csv", "gzip": True, "expires_in_s": 3600},
    "fields": {"name": "string", "sku": "string"},
}


def _item(i: int) -> dict[str, Any]:
    """Staged input items as ``jobs.validate`` writes them: url, meta and overrides."""
    over: dict[str, Any] = {"timeout_s": 3} if i % 3 == 0 else {}
    if i == 4:
        over = {"selectors": {"sku": ".sku"}, "headers": {"X-B": "2"}}
    return {"url": f"https://example.com/p/{i}", "meta": {"n": i} if i % 2 else None, "o": over}


def _result(i: int, errored: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "url": f"https://example.com/p/{i}",
        "input_index": i,
        "status": "error" if errored else "ok",
        "http_status": 404 if errored else 200,
        "meta": {"n": i} if i % 2 else None,
        "attempts": 1,
        "credits": 1,
    }
    if errored:
        row["error"] = {"code": "http_4xx", "message": "404 Not Found"}
    return row


@pytest.fixture
def finished(alice, make_job, settings):
    """A job with 10 URLs in two parts (0-5, 6-9); the given indices errored."""

    def _make(errored: set[int], status: str = "partial", n: int = 10, account=None):  # type: ignore[no-untyped-def]
        job = make_job(
            account or alice.account,
            name="nightly",
            status=status,
            urls_total=n,
            priority="high",
            concurrency=12,
            spec=SPEC,
            started_at=utcnow(),
            completed_at=utcnow() if status not in ("queued", "running") else None,
        )
        storage = get_storage(settings)
        jobs.stage_inline(
            storage, job.id, [json.dumps(_item(i)).encode() + b"\n" for i in range(n)]
        )
        chunks = [range(0, min(6, n)), range(6, n)]
        for index, chunk in enumerate(chunks):
            if len(chunk):
                rows = [_result(i, i in errored) for i in chunk]
                write_part(storage, part_url(storage, job.id, index), rows)
        return job

    return _make


def _staged(settings, job_id: str) -> list[dict[str, Any]]:
    storage = get_storage(settings)
    with storage.open(jobs.input_url(storage, job_id), "rb") as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


def retry(client, caller, job_id: str):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/jobs/{job_id}/retry", headers=caller.headers)


def test_retry_holds_exactly_the_errored_urls_with_overrides_and_meta(
    client, alice, store, settings, finished, flow_starter
):
    errored = {0, 3, 4, 7, 9}
    parent = finished(errored)
    r = retry(client, alice, parent.id)
    assert r.status_code == 202, r.text
    body = r.json()
    created_keys = {"id", "name", "status", "urls_total", "eta_s", "created_at"}
    assert set(body) == created_keys | {"parent_job_id"}
    assert body["parent_job_id"] == parent.id and body["id"] != parent.id
    assert body["status"] == "queued" and body["urls_total"] == len(errored)
    assert body["name"] == "nightly"

    # the staged input: the original lines of the errored indices, in input order
    assert _staged(settings, body["id"]) == [_item(i) for i in sorted(errored)]
    assert _staged(settings, body["id"])[2]["o"] == {
        "selectors": {"sku": ".sku"},
        "headers": {"X-B": "2"},
    }

    new = store.get_job(body["id"], alice.account.id)
    assert new is not None and new.parent_job_id == parent.id
    assert new.spec == SPEC  # same defaults, output and typed columns
    assert (new.priority, new.concurrency) == ("high", 12)
    assert new.flow_run_id == "fake-flow-run-1"
    assert [j.id for j in flow_starter.calls] == [new.id]  # started like POST /v1/jobs

    shown = client.get(f"/v1/jobs/{new.id}", headers=alice.headers).json()
    assert shown["parent_job_id"] == parent.id and shown["urls_total"] == 5
    # the original is untouched
    assert client.get(f"/v1/jobs/{parent.id}", headers=alice.headers).json()["status"] == "partial"


def test_retry_twice_makes_two_jobs(client, alice, finished):
    parent = finished({1})
    a, b = retry(client, alice, parent.id), retry(client, alice, parent.id)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]


def test_retry_of_a_retry_points_at_its_own_parent(client, alice, store, settings, finished):
    parent = finished({2, 5})
    child = retry(client, alice, parent.id).json()["id"]
    # the child ran: one of its two URLs errored again (its input_index is 1 in the child)
    store.update_job(child, status="partial", completed_at=utcnow())
    storage = get_storage(settings)
    write_part(
        storage,
        part_url(storage, child, 0),
        [{**_result(2, False), "input_index": 0}, {**_result(5, True), "input_index": 1}],
    )
    grandchild = retry(client, alice, child)
    assert grandchild.status_code == 202
    assert grandchild.json()["parent_job_id"] == child
    assert _staged(settings, grandchild.json()["id"]) == [_item(5)]


@pytest.mark.parametrize("status", ["completed", "cancelled", "failed"])
def test_no_errored_urls_is_409(client, alice, store, finished, flow_starter, status):
    parent = finished(set(), status=status)
    r = retry(client, alice, parent.id)
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    assert "no errored" in r.json()["detail"]
    assert not flow_starter.calls
    assert store.list_jobs(alice.account.id, None, 10, 0)[1] == 1


def test_failed_job_without_parts_is_409(client, alice, make_job):
    job = make_job(alice.account, status="failed", completed_at=utcnow(), error="unreadable")
    assert retry(client, alice, job.id).status_code == 409


def test_cancelled_job_retries_only_what_errored_not_what_was_skipped(
    client, alice, settings, finished
):
    parent = finished({1}, status="cancelled")
    storage = get_storage(settings)
    storage.rm(part_url(storage, parent.id, 1))  # the second chunk never ran
    r = retry(client, alice, parent.id)
    assert r.status_code == 202
    assert _staged(settings, r.json()["id"]) == [_item(1)]


@pytest.mark.parametrize("status", ["queued", "running"])
def test_job_not_final_is_409(client, alice, finished, flow_starter, status):
    parent = finished({1}, status=status)
    r = retry(client, alice, parent.id)
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    assert status in r.json()["detail"]
    assert not flow_starter.calls


def test_another_accounts_job_is_404(client, alice, bob, finished, flow_starter):
    parent = finished({1}, account=bob.account)
    r = retry(client, alice, parent.id)
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    assert not flow_starter.calls
    assert retry(client, bob, parent.id).status_code == 202


def test_unknown_job_is_404_and_needs_a_key(client, alice):
    assert retry(client, alice, "job_000000000000").status_code == 404
    assert client.post("/v1/jobs/job_000000000000/retry").status_code == 401


def test_prefect_down_fails_the_new_job_with_503(client, alice, store, finished, flow_starter):
    parent = finished({1})
    flow_starter.fail = True
    r = retry(client, alice, parent.id)
    assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM)
    rows, total = store.list_jobs(alice.account.id, None, 10, 0)
    new = next(j for j in rows if j.id != parent.id)
    assert total == 2 and new.status == "failed" and new.parent_job_id == parent.id


def test_openapi_documents_the_retry_route(client):
    spec = client.get("/v1/openapi.json").json()
    op = spec["paths"]["/v1/jobs/{job_id}/retry"]["post"]
    assert set(op["responses"]) >= {"202", "409"}
    ref = op["responses"]["202"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert "parent_job_id" in schema["required"] and "urls_total" in schema["properties"]
