"""Retention: files of jobs past their plan's retention go, their results and downloads are 410."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from shoal import downloads
from shoal.retention import remove_expired
from shoal.storage import get_storage
from shoal.store import Counters, utcnow
from shoal.store._db import session_scope
from shoal.store._tables import AccountRow
from tests.unit.test_api import assert_problem

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")

NOW = utcnow()


def _job_with_files(make_job, settings, account, *, ended_days_ago: float, link_left_s: float):
    """An ended job with a staged input and an output file in the results storage."""
    storage = get_storage(settings)
    job = make_job(account, status="partial", urls_total=1)
    out = storage.url("jobs", job.id, "output", "result.ndjson")
    data = b'{"url": "https://example.com/", "input_index": 0, "status": "error"}\n'
    storage.write_bytes_atomic(storage.url("jobs", job.id, "input.ndjson"), b'{"url": "x"}\n')
    storage.write_bytes_atomic(out, data)
    from shoal.store import get_store

    get_store(settings).update_job(
        job.id,
        completed_at=NOW - timedelta(days=ended_days_ago),
        urls_done=1,
        urls_errored=1,
        outputs=[{"name": "result.ndjson", "url": out, "rows": 1, "size_bytes": len(data)}],
        output_expires_at=NOW + timedelta(seconds=link_left_s),
    )
    return job, out


def _path(url: str) -> str:
    p = urlsplit(url)
    return f"{p.path}?{p.query}"


def test_files_past_retention_are_removed_and_answer_410(
    client, alice, bob, store, settings, make_job
):
    storage = get_storage(settings)
    old, old_out = _job_with_files(
        make_job, settings, alice.account, ended_days_ago=31, link_left_s=-1
    )
    young, young_out = _job_with_files(
        make_job, settings, alice.account, ended_days_ago=29, link_left_s=-1
    )
    # past retention but its download link still runs: kept until the link expires
    linked, linked_out = _job_with_files(
        make_job, settings, alice.account, ended_days_ago=40, link_left_s=3600
    )
    # another account with a shorter plan retention
    with session_scope(store.url) as s:
        s.get(AccountRow, bob.account.id).plan = {"retention_days": 1}
    bobs, bobs_out = _job_with_files(
        make_job, settings, bob.account, ended_days_ago=2, link_left_s=-1
    )
    running = make_job(alice.account, status="running", completed_at=None)
    link = downloads.sign(settings, old.id, "result.ndjson", NOW + timedelta(hours=1))

    report = remove_expired(settings, now=NOW)

    assert sorted(report.jobs_removed) == sorted([old.id, bobs.id])
    assert not storage.exists(old_out) and not storage.exists(bobs_out)
    assert storage.list(storage.url("jobs", old.id)) == []  # input and output alike
    assert storage.exists(young_out) and storage.exists(linked_out)
    assert store.get_job(running.id).results_removed_at is None

    body = client.get(f"/v1/jobs/{old.id}", headers=alice.headers).json()
    assert body["status"] == "partial" and body["urls_done"] == 1  # the job itself stays
    assert body["result_available"] is False and body["download_url"] is None
    problem = assert_problem(client.get(f"/v1/jobs/{old.id}/results", headers=alice.headers), 410)
    assert "retention" in problem["detail"]
    assert_problem(
        client.get(f"/v1/jobs/{old.id}/results?format=ndjson", headers=alice.headers), 410
    )
    assert_problem(client.get(f"/v1/jobs/{old.id}/result", headers=alice.headers), 410)
    assert_problem(client.post(f"/v1/jobs/{old.id}/retry", headers=alice.headers), 410)
    assert_problem(client.get(_path(link)), 410)
    # the kept ones still answer
    assert client.get(f"/v1/jobs/{young.id}/results", headers=alice.headers).status_code == 200
    body = client.get(f"/v1/jobs/{linked.id}", headers=alice.headers).json()
    assert body["result_available"] is True
    # local storage: the API serves the file itself (S3 would answer 307)
    assert client.get(_path(body["download_url"])).status_code == 200

    # a second pass finds nothing more to do
    assert remove_expired(settings, now=NOW).jobs_removed == []


def test_old_records_are_pruned(store, settings, alice, make_job):
    from shoal.store import IdempotencyRow

    ended = make_job(alice.account, status="completed", completed_at=NOW - timedelta(hours=2))
    live = make_job(alice.account, status="running")
    for job in (ended, live):
        store.record_chunk(job.id, 0, Counters(1, 0, 1), finished=True, exact=True)
    with session_scope(store.url) as s:
        s.add(
            IdempotencyRow(
                account_id=alice.account.id,
                key="old",
                body_hash="x",
                job_id=ended.id,
                created_at=NOW - timedelta(days=2),
            )
        )
    report = remove_expired(settings, now=NOW)
    assert (report.idempotency_keys_purged, report.chunk_counters_pruned) == (1, 1)
    assert store.counters(live.id).done == 1 and store.counters(ended.id).done == 0


def test_old_uploads_go_unless_an_unfinished_job_needs_them(
    store, settings, alice, make_job, make_upload
):
    storage = get_storage(settings)
    ids = []
    for n, age_days in enumerate((8, 8, 6)):
        uid = f"upl_T{n}"
        body = b'{"url": "https://example.com/"}\n'
        make_upload(alice.account, uid, NOW - timedelta(days=age_days), body)
        ids.append(uid)
    make_job(
        alice.account,
        status="queued",
        spec={"source": {"kind": "upload", "upload_id": ids[1]}, "concurrency": 1},
    )
    report = remove_expired(settings, now=NOW)
    assert report.uploads_removed == [ids[0]]
    assert store.get_upload(ids[0]) is None and not storage.exists(
        storage.url("uploads", ids[0], "input.ndjson")
    )
    assert store.get_upload(ids[1]) is not None and store.get_upload(ids[2]) is not None
