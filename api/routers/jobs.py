"""``/v1/jobs``: create, read, list, cancel, retry, and read results."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import CurrentAccount, SettingsDep, StorageDep, StoreDep, own_job
from api.errors import answers
from api.prefect_access import scheduler_errors
from deployments.launch import start_flow_run
from shoal import changes, jobs, output, screenshots, submit
from shoal.contract import (
    FINAL_STATUSES,
    ID_PATTERN,
    MAX_OFFSET,
    JobCreate,
    JobCreated,
    JobList,
    JobPublic,
    JobRetried,
    JobSpec,
    JobStatus,
    PageResult,
    ResultPage,
    is_id,
)
from shoal.errors import Conflict, FieldError, InputError
from shoal.output import part_urls
from shoal.store import JobRow, aware

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_STATUSES: tuple[str, ...] = get_args(JobStatus)
_ONE_STATUS = "(?:" + "|".join(_STATUSES) + ")"
#: the ``status`` filter: statuses separated by commas (spaces around them allowed), or empty
#: for all; the served document carries this very pattern
STATUS_FILTER = rf"^(?: *{_ONE_STATUS} *(?:, *{_ONE_STATUS} *)*)?$"
_MEDIA = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[^\x00-\x1f\x7f]+$",  # no control characters (the job store keeps it as text)
    description="The same key with the same body returns the original job (`200`); with "
    "another body it is `409`. Per account, remembered for `SHOAL_IDEMPOTENCY_TTL_S` (24 h).",
)


#: a job id in a path: the document gives its shape; another value is a 404 (an unknown id),
#: not a 422, as the contract says
JobId = Annotated[
    str,
    Path(description="A job's id (`job_…`).", json_schema_extra={"pattern": ID_PATTERN}),
]


def _created(row: JobRow) -> dict[str, Any]:
    return JobCreated(
        id=row.id,
        name=row.name,
        status=row.status,  # type: ignore[arg-type]
        urls_total=row.urls_total,
        eta_s=jobs.eta_seconds(row, row.urls_done),
        created_at=aware(row.created_at),  # type: ignore[arg-type]
    ).model_dump(mode="json")


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    summary="Create a job",
    responses={
        200: {"model": JobCreated, "description": "Idempotent replay: the key's original job"},
        409: {"description": "The Idempotency-Key was used with a different body"},
        **answers(429, 503),
    },
)
async def create_job(
    body: JobCreate,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Validate, stage the input, insert the job (``queued``) and start its flow run.

    The row is committed before the answer, so a ``GET`` right after never 404s."""
    done = await submit.create(
        body,
        account,
        settings=settings,
        store=store,
        storage=storage,
        start=scheduler_errors(start_flow_run),
        idempotency_key=idempotency_key,
    )
    return JSONResponse(_created(done.job), status_code=200 if done.replayed else 202)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobRetried,
    summary="Retry the URLs that errored, as a new job",
    responses={
        409: {"description": "The job has not ended, or none of its URLs errored"},
        **answers(404, 410, 429, 503),
    },
)
async def retry_job(
    job_id: JobId,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
) -> JSONResponse:
    """A new job of exactly the original's errored URLs, with their per-URL overrides and
    ``meta``, and its defaults, output, concurrency and priority; ``parent_job_id`` is set."""
    own_job(store, job_id, account.id)  # 404 before anything else
    row = await submit.retry(
        job_id,
        account,
        settings=settings,
        store=store,
        storage=storage,
        start=scheduler_errors(start_flow_run),
    )
    retried = {**_created(row), "parent_job_id": row.parent_job_id}
    return JSONResponse(JobRetried.model_validate(retried).model_dump(mode="json"), 202)


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    account: CurrentAccount,
    store: StoreDep,
    settings: SettingsDep,
    status: Annotated[
        str | None,
        Query(
            description="Comma-separated statuses: " + ", ".join(_STATUSES),
            json_schema_extra={"pattern": STATUS_FILTER},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    schedule_id: Annotated[
        str | None,
        Query(
            description="Only the runs of this schedule (`sch_…`).",
            json_schema_extra={"pattern": ID_PATTERN},
        ),
    ] = None,
) -> JobList:
    statuses = [s.strip() for s in status.split(",")] if status else None
    if status and re.fullmatch(STATUS_FILTER, status) is None:
        bad = next((s for s in statuses or [] if s not in _STATUSES), status)
        raise InputError(
            "unknown status",
            errors=[
                FieldError("status", f"unknown status {bad!r}; one of " + ", ".join(_STATUSES))
            ],
        )
    if schedule_id is not None and not is_id(schedule_id):
        return JobList(jobs=[], total=0, limit=limit, offset=offset)  # no schedule has that id
    rows, total = store.list_jobs(account.id, statuses, limit, offset, schedule_id=schedule_id)
    return JobList(
        jobs=[jobs.to_public(r, store, settings) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="Job status and live counters",
    responses=answers(404),
)
def get_job(
    job_id: JobId, account: CurrentAccount, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    return jobs.to_public(own_job(store, job_id, account.id), store, settings)


@router.delete(
    "/{job_id}",
    status_code=202,
    response_model=JobPublic,
    summary="Cancel a job gracefully",
    responses={409: {"description": "The job has already ended"}, **answers(404)},
)
def cancel_job(
    job_id: JobId, account: CurrentAccount, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    """Requests in flight finish, queued URLs are skipped, the partial output is kept and the
    status ends ``cancelled``. ``409`` when the job is already final."""
    row = own_job(store, job_id, account.id)
    if row.status in FINAL_STATUSES or not store.request_cancel(job_id):
        raise Conflict(f"job {job_id} is already {row.status}")
    return jobs.to_public(own_job(store, job_id, account.id), store, settings)


@router.get(
    "/{job_id}/results",
    response_model=None,
    summary="Results so far: paged JSON, or the whole file as ndjson, csv or parquet",
    responses={
        200: {"model": ResultPage, "content": {m: {} for m in _MEDIA.values()}},
        **answers(404, 410),
    },
)
def get_results(
    job_id: JobId,
    account: CurrentAccount,
    store: StoreDep,
    storage: StorageDep,
    settings: SettingsDep,
    format: Literal["json", "ndjson", "csv", "parquet"] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ResultPage | StreamingResponse:
    """Available while the job runs (finished chunks so far) and after it ends, until the
    account's retention removes them (then ``410``)."""
    row = own_job(store, job_id, account.id)
    jobs.ensure_results_kept(row)
    parts = part_urls(storage, job_id)
    spec = JobSpec.model_validate(row.spec)
    # each row's change, once the job's change report is written (shoal.changes)
    labels = changes.RowLabels.read(storage, job_id) if spec.compare is not None else None
    # screenshot links expire with the output's download link (while running: shoal.screenshots)
    shots = screenshots.links_of(row, spec, settings)
    if format == "json":
        rows, total = output.read_results(
            storage, parts, limit=limit, offset=offset, screenshot_link=shots
        )
        if labels is not None:
            labels.label_rows(rows)
        return ResultPage(
            results=[PageResult.model_validate(r) for r in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
    missing = jobs.missing_columns(format, spec.fields)
    if missing:
        raise InputError("no typed columns", errors=[FieldError("format", missing)])
    ext = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}[format]
    return StreamingResponse(
        output.stream_output(
            storage,
            parts,
            fmt=format,
            fields=spec.fields,
            extras=output.Extras(
                change=(labels or changes.RowLabels()) if spec.compare is not None else None,
                not_modified=spec.conditional,
                screenshot_url=spec.screenshots,
                screenshot_link=shots,
            ),
        ),
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{ext}"'},
    )


@router.get(
    "/{job_id}/result",
    response_model=PageResult,
    summary="The single result of a one-URL job",
    responses={
        409: {"description": "The job has more than one URL, or no result yet"},
        **answers(404, 410),
    },
)
def get_single_result(
    job_id: JobId,
    account: CurrentAccount,
    store: StoreDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> PageResult:
    row = own_job(store, job_id, account.id)
    jobs.ensure_results_kept(row)
    if row.urls_total is not None and row.urls_total != 1:
        raise Conflict(f"job {job_id} has {row.urls_total} URLs; use /results")
    shots = screenshots.links_of(row, JobSpec.model_validate(row.spec), settings)
    rows, _ = output.read_results(
        storage, part_urls(storage, job_id), limit=1, offset=0, screenshot_link=shots
    )
    if not rows:
        raise Conflict(f"job {job_id} has no result yet (status {row.status})")
    labels = changes.RowLabels.read(storage, job_id)
    if labels is not None:
        labels.label_rows(rows)
    return PageResult.model_validate(rows[0])
