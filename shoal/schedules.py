"""Schedules: recurring jobs (``/v1/schedules``), each run an ordinary job compared with the
schedule's previous run.

What a schedule is lives here: its checks (a cron of five fields in an IANA timezone, or an
interval of at least a minute; a job template that ``POST /v1/jobs`` would take), its public
view, and how one of its runs becomes a job (its times: ``shoal.schedule_times``). *When* runs
happen is Prefect's: each schedule is a schedule of a ``scrape-job`` deployment
(``deployments/prefect_schedules.py``) whose flow runs arrive with ``{"schedule_id": ...}`` and
call :func:`begin_scheduled_run`; run now (:func:`run_now`) makes its job through the same
:func:`create_run`.

A run's job gets the schedule's ``compare`` (default: by URL, every field) with
``previous_job_id`` set to the schedule's previous ``completed`` or ``partial`` run, its
``conditional`` and its ``quality``: what the change report, conditional fetch and the gates read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from shoal import jobs, submit
from shoal.account_plans import plan_for
from shoal.contract import (
    CompareSpec,
    JobCreate,
    JobSpec,
    QualitySpec,
    ScheduleCreate,
    SchedulePatch,
    SchedulePublic,
)
from shoal.errors import (
    Conflict,
    FieldError,
    InputError,
    LimitExceeded,
    NotFound,
    field_errors,
)
from shoal.schedule_times import NEXT_RUNS, anchor_of, cron_problem, next_runs, zone
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import AccountRow, JobRow, RunStart, ScheduleRow, Store, aware, new_id, utcnow

__all__ = [
    "NEXT_RUNS",
    "ScheduledStart",
    "anchor_of",
    "begin_scheduled_run",
    "check",
    "create_run",
    "cron_problem",
    "new_schedule",
    "next_runs",
    "patched",
    "run_now",
    "to_public",
    "zone",
]
log = logging.getLogger(__name__)

#: fields of a schedule that are the schedule's, not the template's (``job.compare`` is refused)
_SCHEDULE_ONLY = ("compare", "quality")


# --- checks ----------------------------------------------------------------------------------


def _timing_errors(
    cron: str | None, timezone: str | None, interval_s: int | None, errors: list[FieldError]
) -> None:
    if (cron is None) == (interval_s is None):
        where = "cron" if cron is None else "interval_s"
        errors.append(FieldError(where, "give exactly one of `cron` or `interval_s`"))
    if cron is not None and (why := cron_problem(cron)):
        errors.append(FieldError("cron", why))
    if timezone is not None:
        if interval_s is not None and cron is None:
            errors.append(FieldError("timezone", "a timezone goes with `cron`, not `interval_s`"))
        elif zone(timezone) is None:
            errors.append(FieldError("timezone", f"{timezone!r} is not an IANA timezone name"))


def check(
    body: ScheduleCreate,
    settings: Settings,
    store: Store,
    account: AccountRow,
) -> JobSpec:
    """Check a schedule as a whole (timing, template, compare and quality); the template's spec.

    Raises ``InputError`` naming every offending field (``cron``, ``timezone``, ``interval_s``,
    ``job.…``, ``compare.…``, ``quality.…``)."""
    errors: list[FieldError] = []
    _timing_errors(body.cron, body.timezone, body.interval_s, errors)
    for name in _SCHEDULE_ONLY:
        if getattr(body.job, name) is not None:
            errors.append(
                FieldError(f"job.{name}", f"set `{name}` on the schedule, not in its job")
            )
    if body.compare is not None and body.compare.previous_job_id is not None:
        errors.append(
            FieldError(
                "compare.previous_job_id",
                "a schedule compares each run with its previous run; leave it out",
            )
        )
    spec = None
    try:
        spec, _ = jobs.validate(
            body.job, settings, account, upload=_upload_of(store, body.job, account.id), loc="job."
        )
    except InputError as exc:
        errors.extend(exc.errors)
    if spec is not None:
        jobs.check_report_fields(body.compare, body.quality, spec.fields, errors)
    if errors or spec is None:
        raise InputError("the schedule is invalid", errors=errors)
    return spec


def _upload_of(store: Store, body: JobCreate, account_id: str) -> Any:
    source = body.source()
    if source is not None and source.kind == "upload" and source.upload_id:
        return store.get_upload(source.upload_id, account_id)
    return None


def _values(body: ScheduleCreate) -> dict[str, Any]:
    """The row's columns of a checked schedule."""
    cron = body.cron.strip() if body.cron is not None else None
    return {
        "name": body.name,
        "cron": " ".join(cron.split()) if cron else None,
        "timezone": (body.timezone or "UTC") if cron else None,
        "interval_s": body.interval_s if cron is None else None,
        "job": body.job.model_dump(mode="json", exclude_unset=True),
        "compare": body.compare.model_dump(mode="json") if body.compare else None,
        "conditional": int(body.conditional),
        "quality": body.quality.model_dump(mode="json") if body.quality else None,
        "paused": int(body.paused),
    }


def new_schedule(
    body: ScheduleCreate, settings: Settings, store: Store, account: AccountRow
) -> ScheduleRow:
    """Check ``body`` and insert its schedule (``Conflict`` for a name the account has)."""
    check(body, settings, store, account)
    now = utcnow()
    row = ScheduleRow(
        id=new_id("sch"), account_id=account.id, created_at=now, updated_at=now, **_values(body)
    )
    return store.insert_schedule(row)


def patched(
    row: ScheduleRow, patch: SchedulePatch, settings: Settings, store: Store, account: AccountRow
) -> dict[str, Any]:
    """The columns ``patch`` changes, checked as the whole schedule they make. ``cron`` given
    drops ``interval_s`` and the other way round; ``null`` clears ``compare`` or ``quality``.

    Raises ``InputError`` as :func:`check` does."""
    given = patch.model_dump(mode="json", exclude_unset=True)
    nulls = [k for k in ("name", "job", "conditional", "paused") if k in given and given[k] is None]
    if nulls:
        raise InputError(
            "the schedule is invalid", errors=[FieldError(k, "may not be null") for k in nulls]
        )
    merged: dict[str, Any] = {
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "interval_s": row.interval_s,
        "job": row.job,
        "compare": row.compare,
        "conditional": bool(row.conditional),
        "quality": row.quality,
        "paused": bool(row.paused),
    }
    if given.get("cron") is not None:
        merged["interval_s"] = None
    if given.get("interval_s") is not None:
        merged["cron"] = merged["timezone"] = None
    merged.update(given)
    try:
        body = ScheduleCreate.model_validate(merged)
    except ValidationError as exc:
        raise InputError("the schedule is invalid", errors=field_errors(exc.errors())) from None
    check(body, settings, store, account)
    return {k: v for k, v in _values(body).items() if getattr(row, k) != v}


def to_public(row: ScheduleRow, now: datetime | None = None) -> SchedulePublic:
    """The schedule as the API shows it (``paused`` as last read from Prefect)."""
    return SchedulePublic(
        id=row.id,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        interval_s=row.interval_s,
        job=row.job,
        compare=CompareSpec.model_validate(row.compare) if row.compare else None,
        conditional=bool(row.conditional),
        quality=QualitySpec.model_validate(row.quality) if row.quality else None,
        paused=bool(row.paused),
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        next_runs=next_runs(row, now),
        last_job_id=row.last_job_id,
        runs=row.runs or 0,
        skipped_runs=row.skipped_runs or 0,
    )


# --- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledStart:
    """What a flow run Prefect's scheduler started does: run ``job_id``, or end as ``message``
    says (``skipped``: an earlier run is going; the schedule is gone; its job is invalid now)."""

    job_id: str | None
    message: str
    skipped: bool = False
    failed: bool = False


def create_run(
    row: ScheduleRow,
    *,
    settings: Settings,
    store: Store,
    storage: Storage,
    flow_run_id: str | None = None,
) -> RunStart:
    """Make the schedule's next run a ``queued`` job (``Store.start_schedule_run``: once per
    flow run, numbered, skipped while an earlier run is going). The template is checked again
    (the operator's limits may have changed) and an upload is read as it is now; an ``s3_uri``
    is staged by the run's flow, so each run reads the object afresh.

    Raises ``InputError`` (the template is no longer valid), ``NotFound`` (the account is gone)
    and ``LimitExceeded`` (the account has its most jobs going)."""
    account = store.get_account(row.account_id)
    if account is None:
        raise NotFound(f"no account {row.account_id}")
    body = JobCreate.model_validate(row.job)
    upload = _upload_of(store, body, account.id)
    spec, lines = jobs.validate(body, settings, account, upload=upload, loc="job.")
    source = body.source()
    total = upload.lines if upload is not None else (None if source else len(lines))
    job = jobs.new_job_row(body, spec, account, urls_total=total)
    job.name = body.name or row.name
    if source is None:
        jobs.stage_inline(storage, job.id, lines)
    compare = CompareSpec.model_validate(row.compare) if row.compare else CompareSpec()
    quality = QualitySpec.model_validate(row.quality) if row.quality else None

    def fill(new: JobRow, number: int, previous_job_id: str | None) -> None:
        run_spec = spec.model_copy(
            update={
                "compare": compare.model_copy(update={"previous_job_id": previous_job_id}),
                "quality": quality,
                "conditional": bool(row.conditional),
            }
        )
        new.spec = run_spec.model_dump(mode="json")

    max_active = plan_for(account.plan, settings).max_concurrent_jobs
    try:
        started = store.start_schedule_run(
            row.id, job, fill, flow_run_id=flow_run_id, max_active=max_active
        )
    except BaseException:
        if source is None:
            storage.rm(storage.url("jobs", job.id), recursive=True)
        raise
    if not started.created and source is None:
        storage.rm(storage.url("jobs", job.id), recursive=True)
    return started


def begin_scheduled_run(schedule_id: str, flow_run_id: str, settings: Settings) -> ScheduledStart:
    """The start of a flow run Prefect's scheduler made for the schedule: its job (made now, or
    by an earlier start of the same flow run), or why it does not run."""
    from shoal.storage import get_storage
    from shoal.store import get_store

    store = get_store(settings)
    row = store.get_schedule(schedule_id)
    if row is None:
        return ScheduledStart(None, f"schedule {schedule_id} no longer exists; nothing to run")
    try:
        started = create_run(
            row,
            settings=settings,
            store=store,
            storage=get_storage(settings),
            flow_run_id=flow_run_id,
        )
    except LimitExceeded as exc:
        store.count_skipped_run(schedule_id, flow_run_id)
        return ScheduledStart(None, f"skipped: {exc.detail}", skipped=True)
    except NotFound as exc:  # its account is gone
        return ScheduledStart(None, f"{exc.detail}; nothing to run")
    except InputError as exc:
        where = "; ".join(f"{e.loc}: {e.msg}" for e in exc.errors) or exc.detail
        return ScheduledStart(
            None, f"the job of schedule {schedule_id} is invalid now ({where})", failed=True
        )
    if started.running is not None:
        r = started.running
        return ScheduledStart(
            None,
            f"skipped: run {r.run_number} of schedule {schedule_id} (job {r.id}) is still "
            f"{r.status}",
            skipped=True,
        )
    if started.job is None:
        return ScheduledStart(None, f"schedule {schedule_id} no longer exists; nothing to run")
    return ScheduledStart(started.job.id, f"run {started.job.run_number} of {schedule_id}")


async def run_now(
    schedule_id: str,
    account: AccountRow,
    *,
    settings: Settings,
    store: Store,
    storage: Storage,
    start: submit.StartFlowRun,
) -> JobRow:
    """Start the schedule's next run now, as ``POST /v1/jobs`` starts a job.

    Raises ``NotFound`` (unknown or another account's schedule), ``Conflict`` (a run of it is
    still going), ``InputError`` (its job is no longer valid) and what starting a job raises."""
    row = await asyncio.to_thread(store.get_schedule, schedule_id, account.id)
    if row is None:
        raise NotFound(f"no schedule {schedule_id}")
    started = await asyncio.to_thread(
        create_run, row, settings=settings, store=store, storage=storage
    )
    if started.running is not None:
        r = started.running
        raise Conflict(
            f"run {r.run_number} of schedule {schedule_id} (job {r.id}) is still {r.status}; "
            "runs of one schedule never overlap"
        )
    if started.job is None:
        raise NotFound(f"no schedule {schedule_id}")
    return await submit.start_job(started.job, settings=settings, store=store, start=start)
