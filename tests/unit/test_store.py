"""shoal.store: accounts, keys, jobs, chunk counters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from shoal.store import ApiKeyRow, Counters, JobRow, Store, aware, hash_key, new_id, utcnow
from shoal.store._db import session_scope

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")


@pytest.fixture
def st(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


@pytest.fixture
def acct(st):
    return st.get_or_create_account("acme")[0]


def _job(st, acct, **kw) -> JobRow:
    values = dict(
        id=new_id("job"),
        account_id=acct.id,
        name=None,
        status="queued",
        priority="normal",
        concurrency=1,
        spec={},
        urls_total=10,
        created_at=utcnow(),
    )
    values.update(kw)
    return st.insert_job(JobRow(**values))


# --- accounts and keys -------------------------------------------------------------


def test_get_or_create_account_is_idempotent(st):
    a, created = st.get_or_create_account("x")
    b, created_again = st.get_or_create_account("x")
    assert created and not created_again and a.id == b.id
    assert a.id.startswith("acct_") and a.webhook_secret.startswith("whsec_")
    assert a.plan == {}  # the operator's defaults apply (shoal.account_plans)
    assert st.count_accounts() == 1
    assert st.get_account(a.id).name == "x"


def test_keys_are_hashed_and_resolve_to_their_account(st, acct):
    other = st.get_or_create_account("other")[0]
    key = st.create_key(acct.id)
    key2 = st.create_key(other.id)
    assert key != key2 and key.startswith("sk_")
    assert st.account_for_key(key).id == acct.id
    assert st.account_for_key(key2).id == other.id
    assert st.account_for_key("sk_unknown") is None
    with session_scope(st.url) as s:
        rows = s.scalars(select(ApiKeyRow)).all()
    assert {r.key_hash for r in rows} == {hash_key(key), hash_key(key2)}
    assert all(key not in (r.key_hash, r.prefix) for r in rows)


def test_set_webhook_secret(st, acct):
    st.set_webhook_secret(acct.id, "whsec_new")
    assert st.get_account(acct.id).webhook_secret == "whsec_new"


# --- jobs ------------------------------------------------------------------------


def test_get_job_scoped_to_account(st, acct):
    other = st.get_or_create_account("other")[0]
    job = _job(st, acct)
    assert st.get_job(job.id).id == job.id
    assert st.get_job(job.id, acct.id).id == job.id
    assert st.get_job(job.id, other.id) is None
    assert st.get_job("job_nope") is None


def test_list_jobs_newest_first_filtered_paged(st, acct):
    other = st.get_or_create_account("other")[0]
    t0 = utcnow() - timedelta(hours=1)
    statuses = ["queued", "running", "completed", "failed", "completed"]
    jobs = [
        _job(st, acct, status=s, created_at=t0 + timedelta(seconds=i))
        for i, s in enumerate(statuses)
    ]
    _job(st, other, created_at=t0 + timedelta(seconds=99))
    rows, total = st.list_jobs(acct.id, None, 10, 0)
    assert total == 5 and [r.id for r in rows] == [j.id for j in reversed(jobs)]
    rows, total = st.list_jobs(acct.id, ["completed", "queued"], 10, 0)
    assert total == 3 and [r.id for r in rows] == [jobs[4].id, jobs[2].id, jobs[0].id]
    rows, total = st.list_jobs(acct.id, None, 2, 2)
    assert total == 5 and [r.id for r in rows] == [jobs[2].id, jobs[1].id]


def test_list_jobs_ties_broken_by_id(st, acct):
    t = utcnow()
    ids = sorted(_job(st, acct, created_at=t).id for _ in range(3))
    rows, _ = st.list_jobs(acct.id, None, 10, 0)
    assert [r.id for r in rows] == list(reversed(ids))


def test_finish_only_once(st, acct):
    job = _job(st, acct)
    assert st.finish(job.id, "completed", urls_done=10) is True
    assert st.finish(job.id, "failed", error="late") is False
    row = st.get_job(job.id)
    assert row.status == "completed" and row.urls_done == 10 and row.error is None
    assert row.completed_at is not None
    assert st.nonfinal_jobs() == []


def test_request_cancel(st, acct):
    job = _job(st, acct)
    assert not st.cancel_requested(job.id)
    assert st.request_cancel(job.id) is True
    first = st.get_job(job.id).cancel_requested_at
    assert first is not None and st.cancel_requested(job.id)
    assert st.request_cancel(job.id) is True
    assert st.get_job(job.id).cancel_requested_at == first  # the first request is kept
    st.finish(job.id, "cancelled")
    assert st.request_cancel(job.id) is False


def test_request_cancel_false_on_final_job(st, acct):
    for status in ("completed", "partial", "cancelled", "failed"):
        job = _job(st, acct, status=status)
        assert st.request_cancel(job.id) is False
        assert st.get_job(job.id).cancel_requested_at is None


def test_mark_running_keeps_first_start_and_leaves_final_jobs(st, acct):
    job = _job(st, acct)
    row = st.mark_running(job.id, "fr-1")
    assert row.status == "running" and row.flow_run_id == "fr-1"
    started = aware(row.started_at)
    row = st.mark_running(job.id, None)
    assert aware(row.started_at) == started and row.flow_run_id == "fr-1"
    done = _job(st, acct, status="failed")
    assert st.mark_running(done.id, "fr-2").status == "failed"
    with pytest.raises(LookupError):
        st.mark_running("job_nope", None)


# --- chunk counters -------------------------------------------------------------------


def _c3(st, job_id):
    c = st.counters(job_id)
    return c.done, c.errored, c.credits


def test_live_updates_never_lower_counters(st, acct):
    job = _job(st, acct)
    st.record_chunk(job.id, 0, Counters(5, 2, 6), finished=False, exact=False)
    st.record_chunk(job.id, 0, Counters(3, 1, 3), finished=False, exact=False)
    assert _c3(st, job.id) == (5, 2, 6)
    st.record_chunk(job.id, 0, Counters(4, 3, 9), finished=False, exact=False)
    assert _c3(st, job.id) == (5, 3, 9)  # each counter raised on its own


def test_exact_sets_counters(st, acct):
    job = _job(st, acct)
    st.record_chunk(job.id, 0, Counters(9, 4, 9), finished=False, exact=False)
    st.record_chunk(job.id, 0, Counters(7, 1, 8), finished=True, exact=True)
    c = st.counters(job.id)
    assert (c.done, c.errored, c.credits, c.chunks_finished) == (7, 1, 8, 1)
    assert st.finished_chunks(job.id) == {0}


def test_counters_sum_chunks_of_one_job(st, acct):
    job, other = _job(st, acct), _job(st, acct)
    assert st.counters(job.id) == Counters(0, 0, 0, 0)
    st.record_chunk(job.id, 0, Counters(10, 1, 10), finished=True, exact=True)
    st.record_chunk(job.id, 1, Counters(4, 0, 8), finished=False, exact=False)
    st.record_chunk(job.id, 2, Counters(6, 2, 6), finished=True, exact=True)
    st.record_chunk(other.id, 0, Counters(100, 100, 100), finished=True, exact=True)
    assert st.counters(job.id) == Counters(20, 3, 24, 2)
    assert st.finished_chunks(job.id) == {0, 2}


def test_rerun_chunk_replaces_not_adds(st, acct):
    job = _job(st, acct)
    st.record_chunk(job.id, 0, Counters(10, 0, 10), finished=True, exact=True)
    st.record_chunk(job.id, 0, Counters(10, 0, 10), finished=True, exact=True)
    assert st.counters(job.id).done == 10
