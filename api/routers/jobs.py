"""``/v1/jobs``: create, read, list, cancel, and read results."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import CurrentAccount, SettingsDep, StorageDep, StoreDep
from api.errors import problem
from api.launcher import start_flow_run
from shoal import jobs, output
from shoal.contract import (
    FINAL_STATUSES,
    JobCreate,
    JobCreated,
    JobList,
    JobPublic,
    JobSpec,
    PageResult,
    ResultPage,
)
from shoal.errors import Conflict, FieldError, InputError, NotFound
from shoal.scrape import part_urls
from shoal.store import JobRow, Store, aware

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_STATUSES = ("queued", "running", "completed", "partial", "cancelled", "failed")
_MEDIA = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


def _own_job(store: Store, job_id: str, account_id: str) -> JobRow:
    row = store.get_job(job_id, account_id)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    summary="Create a job",
    responses={200: {"model": JobCreated, "description": "Idempotent replay"}},
)
async def create_job(
    body: JobCreate,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
) -> JSONResponse:
    """Validate, stage the input, insert the job (``queued``) and start its flow run.

    The row is committed before the answer, so a ``GET`` right after never 404s."""
    spec, items = jobs.validate(body, settings, account)
    row = jobs.new_job_row(body, spec, account, urls_total=len(items))
    await run_in_threadpool(jobs.stage_inline, storage, row.id, items)
    await run_in_threadpool(store.insert_job, row)
    try:
        row.flow_run_id = await start_flow_run(row, settings)
    except Exception as exc:  # Prefect unreachable: the job can't run; say so, keep nothing running
        log.exception("could not start the flow run of %s", row.id)
        await run_in_threadpool(
            store.finish, row.id, "failed", error=f"could not start the flow run: {exc}"
        )
        return problem(503, "Service unavailable", "the scheduler (Prefect) is unreachable")
    await run_in_threadpool(store.update_job, row.id, flow_run_id=row.flow_run_id)
    created = JobCreated(
        id=row.id,
        name=row.name,
        status="queued",
        urls_total=row.urls_total,
        eta_s=None,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
    )
    return JSONResponse(created.model_dump(mode="json"), status_code=202)


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    account: CurrentAccount,
    store: StoreDep,
    settings: SettingsDep,
    status: Annotated[str | None, Query(description="Comma-separated statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    bad = [s for s in statuses or [] if s not in _STATUSES]
    if bad:
        raise InputError(
            "unknown status",
            errors=[
                FieldError("status", f"unknown status {bad[0]!r}; one of " + ", ".join(_STATUSES))
            ],
        )
    rows, total = store.list_jobs(account.id, statuses, limit, offset)
    return JobList(
        jobs=[jobs.to_public(r, store, settings) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{job_id}", response_model=JobPublic, summary="Job status and live counters")
def get_job(
    job_id: str, account: CurrentAccount, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    return jobs.to_public(_own_job(store, job_id, account.id), store, settings)


@router.delete(
    "/{job_id}", status_code=202, response_model=JobPublic, summary="Cancel a job gracefully"
)
def cancel_job(
    job_id: str, account: CurrentAccount, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    """Requests in flight finish, queued URLs are skipped, the partial output is kept and the
    status ends ``cancelled``. ``409`` when the job is already final."""
    row = _own_job(store, job_id, account.id)
    if row.status in FINAL_STATUSES or not store.request_cancel(job_id):
        raise Conflict(f"job {job_id} is already {row.status}")
    return jobs.to_public(_own_job(store, job_id, account.id), store, settings)


@router.get(
    "/{job_id}/results",
    response_model=None,
    summary="Results so far: paged JSON, or the whole file as ndjson, csv or parquet",
    responses={200: {"model": ResultPage, "content": {m: {} for m in _MEDIA.values()}}},
)
def get_results(
    job_id: str,
    account: CurrentAccount,
    store: StoreDep,
    storage: StorageDep,
    format: Literal["json", "ndjson", "csv", "parquet"] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ResultPage | StreamingResponse:
    """Available while the job runs (finished chunks so far) and after it ends."""
    row = _own_job(store, job_id, account.id)
    parts = part_urls(storage, job_id)
    if format == "json":
        rows, total = output.read_results(storage, parts, limit=limit, offset=offset)
        return ResultPage(
            results=[PageResult.model_validate(r) for r in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
    spec = JobSpec.model_validate(row.spec)
    if format in ("csv", "parquet") and not spec.fields:
        raise InputError(
            "no typed columns",
            errors=[FieldError("format", f"{format} needs an extract schema or selectors")],
        )
    ext = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}[format]
    return StreamingResponse(
        output.stream_output(storage, parts, fmt=format, fields=spec.fields),
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{ext}"'},
    )


@router.get(
    "/{job_id}/result", response_model=PageResult, summary="The single result of a one-URL job"
)
def get_single_result(
    job_id: str, account: CurrentAccount, store: StoreDep, storage: StorageDep
) -> PageResult:
    row = _own_job(store, job_id, account.id)
    if row.urls_total is not None and row.urls_total != 1:
        raise Conflict(f"job {job_id} has {row.urls_total} URLs; use /results")
    rows, _ = output.read_results(storage, part_urls(storage, job_id), limit=1, offset=0)
    if not rows:
        raise Conflict(f"job {job_id} has no result yet (status {row.status})")
    return PageResult.model_validate(rows[0])
