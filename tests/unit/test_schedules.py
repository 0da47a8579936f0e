"""Schedules without Prefect: their run times (a cron keeps local time across DST, the same
times Prefect's scheduler computes), their checks, and how a run becomes a job in the store
(numbered, once per flow run, skipped while the previous run goes, compared with the last
completed one), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.server.schemas.schedules import CronSchedule  # what the scheduler service reads

from shoal import retention, schedules
from shoal.contract import JobSpec, ScheduleCreate
from shoal.errors import InputError
from shoal.storage import get_storage
from shoal.store import JobRow, ScheduleRow, Store, new_id, utcnow

STORES = ("sqlite", "postgres")


def _row(**values: Any) -> ScheduleRow:
    base: dict[str, Any] = {
        "id": "sch_T",
        "account_id": "acct_T",
        "name": "t",
        "job": {},
        "paused": 0,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return ScheduleRow(**{**base, **values})


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- run times -------------------------------------------------------------------------------


def test_a_cron_keeps_local_time_across_spring_and_autumn_dst() -> None:
    """09:30 in New York is 14:30 UTC before 8 March 2026 and 13:30 after; 09:00 in Berlin is
    07:00 UTC before 25 October 2026 and 08:00 after."""
    ny = _row(cron="30 9 * * *", timezone="America/New_York")
    assert schedules.next_runs(ny, _utc(2026, 3, 6, 15)) == [
        _utc(2026, 3, 7, 14, 30),
        _utc(2026, 3, 8, 13, 30),
        _utc(2026, 3, 9, 13, 30),
        _utc(2026, 3, 10, 13, 30),
        _utc(2026, 3, 11, 13, 30),
    ]
    berlin = _row(cron="0 9 * * *", timezone="Europe/Berlin")
    runs = schedules.next_runs(berlin, _utc(2026, 10, 23, 12), n=4)
    assert runs == [
        _utc(2026, 10, 24, 7),
        _utc(2026, 10, 25, 8),
        _utc(2026, 10, 26, 8),
        _utc(2026, 10, 27, 8),
    ]
    assert all(r.tzinfo is UTC for r in runs)


def test_a_wall_time_the_spring_change_skips_runs_once_and_a_repeated_one_once() -> None:
    nightly = _row(cron="30 2 * * *", timezone="Europe/Berlin")
    # 29 March 2026: 02:00 -> 03:00; 02:30 does not exist and runs at 03:30 summer time
    assert schedules.next_runs(nightly, _utc(2026, 3, 28, 12), n=2) == [
        _utc(2026, 3, 29, 1, 30),
        _utc(2026, 3, 30, 0, 30),
    ]
    # 25 October 2026: 03:00 -> 02:00; 02:30 happens twice and runs at its first
    assert schedules.next_runs(nightly, _utc(2026, 10, 24, 12), n=2) == [
        _utc(2026, 10, 25, 0, 30),
        _utc(2026, 10, 26, 1, 30),
    ]


@pytest.mark.parametrize(
    ("cron", "tz", "now"),
    [
        ("0 2 * * *", "Europe/Berlin", _utc(2026, 3, 26)),
        ("30 2 * * *", "Europe/Berlin", _utc(2026, 10, 23)),
        ("*/20 1-3 * * *", "Europe/Berlin", _utc(2026, 10, 24, 22)),
        ("*/20 1-3 * * *", "Europe/Berlin", _utc(2026, 3, 28, 23)),
        ("15 9 * * 1-5", "America/New_York", _utc(2026, 11, 1)),
        ("0 0 1 * *", "Australia/Sydney", _utc(2026, 3, 30)),
        ("45 23 * * 0", "UTC", _utc(2026, 12, 5, 11)),
        ("0 12 15 * 5", "Asia/Kolkata", _utc(2026, 5, 1)),
    ],
)
def test_next_runs_are_the_times_prefects_scheduler_makes(
    cron: str, tz: str, now: datetime
) -> None:
    """The API's ``next_runs`` and the flow runs Prefect's scheduler creates must agree, DST
    changes included (day-of-month OR day-of-week, as cron and Prefect's ``day_or``)."""
    ours = schedules.next_runs(_row(cron=cron, timezone=tz), now, n=8)
    theirs = asyncio.run(CronSchedule(cron=cron, timezone=tz).get_dates(n=8, start=now))
    assert ours == [d.astimezone(UTC) for d in theirs]


def test_an_interval_counts_from_the_schedules_creation() -> None:
    row = _row(interval_s=3600, created_at=_utc(2026, 12, 5, 10, 0, 7))
    assert schedules.next_runs(row, _utc(2026, 12, 5, 12, 30), n=3) == [
        _utc(2026, 12, 5, 13, 0, 7),
        _utc(2026, 12, 5, 14, 0, 7),
        _utc(2026, 12, 5, 15, 0, 7),
    ]
    assert schedules.next_runs(row, _utc(2026, 12, 5, 9), n=1) == [_utc(2026, 12, 5, 10, 0, 7)]


def test_a_paused_schedule_has_no_next_runs() -> None:
    assert schedules.next_runs(_row(interval_s=60, paused=1)) == []


@pytest.mark.parametrize(
    ("cron", "ok"),
    [
        ("0 2 * * *", True),
        ("*/5 * * * 1-5", True),
        ("0 0 L * *", True),
        ("* * * *", False),
        ("0 0 * * * *", False),
        ("61 * * * *", False),
        ("0 25 * * *", False),
        ("0 0 31 2 *", False),
        ("daily", False),
    ],
)
def test_cron_expressions(cron: str, ok: bool) -> None:
    assert (schedules.cron_problem(cron) is None) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("UTC", True),
        ("Europe/Berlin", True),
        ("Mars/Olympus", False),
        ("../../etc/passwd", False),
        ("/etc/localtime", False),
        ("", False),
    ],
)
def test_timezones_are_iana_names(name: str, ok: bool) -> None:
    assert (schedules.zone(name) is not None) is ok


# --- checks ----------------------------------------------------------------------------------


def _body(**values: Any) -> ScheduleCreate:
    job = {"urls": ["https://example.com/a"], "defaults": {"extract": {"sku": "string"}}}
    return ScheduleCreate.model_validate({"name": "n", "interval_s": 60, "job": job, **values})


def _locs(exc: pytest.ExceptionInfo[InputError]) -> set[str]:
    return {e.loc for e in exc.value.errors}


@pytest.mark.parametrize(
    ("values", "loc"),
    [
        ({"cron": "0 2 * *", "interval_s": None}, "cron"),
        ({"cron": "0 2 * * *"}, "interval_s"),
        ({"interval_s": None}, "cron"),
        ({"cron": "0 2 * * *", "interval_s": None, "timezone": "Nowhere/Land"}, "timezone"),
        ({"timezone": "Europe/Berlin"}, "timezone"),
        ({"compare": {"key": "price"}}, "compare.key"),
        ({"compare": {"fields": ["sku", "colour"]}}, "compare.fields[1]"),
        ({"compare": {"previous_job_id": "job_X"}}, "compare.previous_job_id"),
        ({"quality": {"max_null_rate": {"price": 0.1}}}, "quality.max_null_rate.price"),
    ],
)
def test_a_schedule_is_checked_naming_the_field(
    values: dict[str, Any], loc: str, settings, store: Store, alice
) -> None:
    with pytest.raises(InputError) as exc:
        schedules.check(_body(**values), settings, store, alice.account)
    assert loc in _locs(exc)


def test_the_job_template_is_checked_as_post_v1_jobs_checks_it(settings, store, alice) -> None:
    job = {"urls": ["ftp://x"], "compare": {"key": "url"}, "output": {"format": "csv"}}
    with pytest.raises(InputError) as exc:
        schedules.check(_body(job=job), settings, store, alice.account)
    assert _locs(exc) == {"job.urls[0]", "job.compare", "job.output.format"}
    body = _body(job={"input": {"upload_id": "upl_NOPE"}})
    with pytest.raises(InputError) as exc:
        schedules.check(body, settings, store, alice.account)
    assert _locs(exc) == {"job.input.upload_id"}


# --- runs in the store -----------------------------------------------------------------------


def _schedule(store: Store, account_id: str, **values: Any) -> ScheduleRow:
    job = {"urls": ["https://example.com/a", "https://example.com/b"]}
    row = ScheduleRow(
        id=new_id("sch"), account_id=account_id, name=new_id("n"), interval_s=60, job=job
    )
    for k, v in values.items():
        setattr(row, k, v)
    return store.insert_schedule(row)


def _run(settings, store: Store, row: ScheduleRow, flow_run_id: str | None = None) -> Any:
    return schedules.create_run(
        store.get_schedule(row.id),  # type: ignore[arg-type]
        settings=settings,
        store=store,
        storage=get_storage(settings),
        flow_run_id=flow_run_id,
    )


def test_runs_are_numbered_made_once_per_flow_run_and_skipped_while_one_goes(
    settings, store: Store, alice
) -> None:
    row = _schedule(store, alice.account.id, conditional=1)
    first = _run(settings, store, row, "fr-1")
    assert first.created and first.job.run_number == 1 and first.job.schedule_id == row.id
    again = _run(settings, store, row, "fr-1")  # the same flow run started again
    assert not again.created and again.job.id == first.job.id
    assert store.get_schedule(row.id).runs == 1  # type: ignore[union-attr]

    skipped = _run(settings, store, row, "fr-2")  # due while run 1 is queued
    assert skipped.job is None and skipped.running.id == first.job.id
    _run(settings, store, row, "fr-2")  # that flow run retried: counted once
    assert store.get_schedule(row.id).skipped_runs == 1  # type: ignore[union-attr]
    assert _run(settings, store, row).running.id == first.job.id  # run now: not counted
    assert store.get_schedule(row.id).skipped_runs == 1  # type: ignore[union-attr]

    store.finish(first.job.id, "completed")
    second = _run(settings, store, row, "fr-3")
    assert second.job.run_number == 2
    spec = JobSpec.model_validate(second.job.spec)
    assert spec.compare is not None and spec.compare.previous_job_id == first.job.id
    assert spec.compare.key == "url" and spec.conditional is True
    first_spec = JobSpec.model_validate(store.get_job(first.job.id).spec)  # type: ignore[union-attr]
    assert first_spec.compare is not None and first_spec.compare.previous_job_id is None
    sched = store.get_schedule(row.id)
    assert sched is not None and (sched.runs, sched.last_job_id) == (2, second.job.id)
    listed, total = store.list_jobs(alice.account.id, None, 10, 0, schedule_id=row.id)
    assert total == 2 and {j.run_number for j in listed} == {1, 2}


def test_the_previous_run_is_the_last_that_completed_or_ended_partial(
    settings, store: Store, alice
) -> None:
    row = _schedule(store, alice.account.id, compare={"key": "url", "fields": None})
    ids = []
    for status in ("completed", "partial", "failed", "cancelled"):
        started = _run(settings, store, row)
        store.finish(started.job.id, status)
        ids.append(started.job.id)
    assert store.previous_run(row.id, 5).id == ids[1]  # type: ignore[union-attr]
    assert store.previous_run(row.id, 2).id == ids[0]  # type: ignore[union-attr]
    assert store.previous_run(row.id, 1) is None
    store.update_job(ids[1], results_removed_at=utcnow())  # retention took its files
    fifth = _run(settings, store, row)
    assert JobSpec.model_validate(fifth.job.spec).compare.previous_job_id == ids[0]  # type: ignore[union-attr]


def test_two_starts_of_one_flow_run_at_once_make_one_job(settings, store: Store, alice) -> None:
    row = _schedule(store, alice.account.id)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(asyncio.to_thread(_run, settings, store, row, "fr-same") for _ in range(4))
        )

    results = asyncio.run(both())
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert store.get_schedule(row.id).runs == 1  # type: ignore[union-attr]


def test_inline_input_is_staged_for_each_run_and_dropped_when_skipped(
    settings, store: Store, alice
) -> None:
    storage = get_storage(settings)
    row = _schedule(store, alice.account.id)
    first = _run(settings, store, row, "fr-1").job
    assert storage.exists(storage.url("jobs", first.id, "input.ndjson"))
    before = set(storage.glob(storage.url("jobs", "*", "input.ndjson")))
    _run(settings, store, row, "fr-2")  # skipped
    assert set(storage.glob(storage.url("jobs", "*", "input.ndjson"))) == before


def test_retention_keeps_an_upload_a_schedule_uses(
    settings, store: Store, alice, make_upload
) -> None:
    old = utcnow() - timedelta(days=settings.upload_retention_days + 1)
    for upload_id in ("upl_KEPT", "upl_GONE"):
        make_upload(alice.account, upload_id, old)
    _schedule(store, alice.account.id, job={"input": {"upload_id": "upl_KEPT"}})
    report = retention.remove_expired(settings)
    assert report.uploads_removed == ["upl_GONE"]
    assert store.get_upload("upl_KEPT") is not None


def test_a_job_of_a_deleted_schedule_stays(settings, store: Store, alice) -> None:
    row = _schedule(store, alice.account.id)
    job = _run(settings, store, row).job
    assert store.delete_schedule(row.id)
    kept = store.get_job(job.id)
    assert isinstance(kept, JobRow) and kept.schedule_id == row.id
    done = schedules.begin_scheduled_run(row.id, "fr-late", settings)
    assert done.job_id is None and "no longer exists" in done.message


def test_an_s3_input_is_read_by_each_run_not_when_the_run_is_made(
    settings, store: Store, alice
) -> None:
    """Each run's job names the object and stages it when its flow runs (``shoal.staging``), so
    every run reads the object as it is then: nothing is staged or counted at creation."""
    storage = get_storage(settings)
    row = _schedule(store, alice.account.id, job={"input": {"s3_uri": "s3://bucket/urls.ndjson"}})
    first = _run(settings, store, row, "fr-1").job
    store.finish(first.id, "completed")
    second = _run(settings, store, row, "fr-2").job
    for job in (first, second):
        spec = JobSpec.model_validate(store.get_job(job.id).spec)  # type: ignore[union-attr]
        assert spec.source is not None and spec.source.uri == "s3://bucket/urls.ndjson"
        assert job.urls_total is None
        assert not storage.exists(storage.url("jobs", job.id, "input.ndjson"))


def test_a_run_whose_template_no_longer_checks_fails_saying_why(settings, store, alice) -> None:
    row = _schedule(store, alice.account.id, job={"input": {"upload_id": "upl_GONE"}})
    done = schedules.begin_scheduled_run(row.id, "fr-1", settings)
    assert done.failed and done.job_id is None
    assert "job.input.upload_id: no upload upl_GONE" in done.message
    assert store.get_schedule(row.id).runs == 0  # type: ignore[union-attr]


def test_removing_an_account_removes_its_schedules(settings, store: Store, alice, bob) -> None:
    row = _schedule(store, alice.account.id)
    _run(settings, store, row)
    kept = _schedule(store, bob.account.id)
    removed = store.remove_account(alice.account.id)  # a foreign key refers to the account
    assert (removed["schedules"], removed["jobs"]) == (1, 1)
    assert store.get_schedule(row.id) is None and store.get_schedule(kept.id) is not None
