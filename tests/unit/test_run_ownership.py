"""Which flow run owns a job: ``mark_running`` and ``claim_resume`` as compare-and-sets, so that
of two runs of one job the later attempt always wins and a resume is recorded once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

#: the rules hold on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")


def test_first_run_owns_the_job(store, alice, make_job):
    job = make_job(alice.account)
    row = store.mark_running(job.id, "fr-0")
    assert (row.status, row.flow_run_id, row.resume_count) == ("running", "fr-0", 0)
    assert store.run_owner(job.id) == ("fr-0", 0)


def test_a_resume_is_claimed_once(store, alice, make_job):
    job = make_job(alice.account)
    store.mark_running(job.id, "fr-0")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda _: store.claim_resume(job.id, 1, "fr-1"), range(8)))
    assert won.count(True) == 1
    assert store.run_owner(job.id) == ("fr-1", 1)
    assert store.claim_resume(job.id, 1, "fr-other") is False  # the same attempt again
    assert store.run_owner(job.id) == ("fr-1", 1)


def test_resumed_run_that_starts_before_the_claim_keeps_the_job(store, alice, make_job):
    job = make_job(alice.account)
    store.mark_running(job.id, "fr-0")
    row = store.mark_running(job.id, "fr-1", 1)  # the new run was quicker than its resumer
    assert (row.flow_run_id, row.resume_count) == ("fr-1", 1)
    assert store.claim_resume(job.id, 1, "fr-1") is False  # nothing left to record
    assert store.run_owner(job.id) == ("fr-1", 1)


def test_a_stale_run_cannot_take_the_job_back(store, alice, make_job):
    job = make_job(alice.account)
    store.mark_running(job.id, "fr-0")
    assert store.claim_resume(job.id, 1, "fr-1")
    row = store.mark_running(job.id, "fr-0", 0)  # the first run, declared dead, starts again
    assert (row.flow_run_id, row.resume_count) == ("fr-1", 1)
    assert store.run_owner(job.id) == ("fr-1", 1)


def test_final_jobs_are_not_resumed(store, alice, make_job):
    job = make_job(alice.account, status="completed")
    assert store.claim_resume(job.id, 1, "fr-1") is False
    assert store.mark_running(job.id, "fr-1", 1).status == "completed"
