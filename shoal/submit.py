"""Submitting jobs: ``POST /v1/jobs`` (with ``Idempotency-Key``) and ``POST /v1/jobs/{id}/retry``.

Both end in ``_launch``: stage the input, commit the ``queued`` row, start its flow run. Starting
the flow run is a callable the API passes in (``shoal`` never imports Prefect).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow.compute as pc

from shoal import jobs, output
from shoal.account_plans import plan_for
from shoal.contract import FINAL_STATUSES, JobCreate
from shoal.errors import Conflict, LimitExceeded, NotFound, SchedulerBusy, Unavailable
from shoal.finalize import fail_job
from shoal.output import part_urls
from shoal.settings import Settings
from shoal.storage import Storage
from shoal.store import AccountRow, JobRow, Store, utcnow

log = logging.getLogger(__name__)

StartFlowRun = Callable[[JobRow, Settings], Awaitable[str]]


@dataclass(frozen=True)
class Submitted:
    """The job a submission answers with; ``replayed`` when an Idempotency-Key found it."""

    job: JobRow
    replayed: bool = False


@dataclass(frozen=True)
class _Key:
    key: str
    body_hash: str


def body_hash(body: JobCreate) -> str:
    """SHA-256 of the parsed body as canonical JSON: key order, spacing and defaults written
    out or left implicit do not change it; any value that changes the job does."""
    # stdlib json: sorts keys, keeps big integers and escapes lone surrogates (orjson refuses)
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create(
    body: JobCreate,
    account: AccountRow,
    *,
    settings: Settings,
    store: Store,
    storage: Storage,
    start: StartFlowRun,
    idempotency_key: str | None = None,
) -> Submitted:
    """Validate and launch a job; with a key, the account's earlier job of that key instead.

    Raises ``InputError`` (invalid body), ``Conflict`` (the key was used with another body)
    and ``Unavailable`` (the flow run could not be started; the job is recorded ``failed``)."""
    key = _Key(idempotency_key, body_hash(body)) if idempotency_key is not None else None
    if key is not None:
        held = await asyncio.to_thread(
            store.get_idempotency, account.id, key.key, not_before=_not_before(settings)
        )
        if held is not None:
            return await _replay(store, key, held.body_hash, held.job_id)
    source = body.source()
    upload = None
    if source is not None and source.kind == "upload" and source.upload_id:
        upload = await asyncio.to_thread(store.get_upload, source.upload_id, account.id)
    previous = None
    if body.compare is not None and body.compare.previous_job_id is not None:
        previous = await asyncio.to_thread(store.get_job, body.compare.previous_job_id, account.id)
    spec, items = jobs.validate(body, settings, account, upload=upload, previous=previous)
    # an upload's count is known; an S3 file is counted by the job (null until then)
    total = upload.lines if upload is not None else (None if source else len(items))
    row = jobs.new_job_row(body, spec, account, urls_total=total)
    if source is None:  # file inputs are staged by the flow (shoal.staging)
        await asyncio.to_thread(jobs.stage_inline, storage, row.id, items)
    return await _launch(
        row, settings=settings, store=store, storage=storage, start=start, account=account, key=key
    )


async def retry(
    job_id: str,
    account: AccountRow,
    *,
    settings: Settings,
    store: Store,
    storage: Storage,
    start: StartFlowRun,
) -> JobRow:
    """Launch a new job of exactly the URLs that errored in ``job_id``, each with its per-URL
    overrides and ``meta``, and the original's defaults, output, concurrency, priority and
    webhook (the spec is copied, so the new job reports its own end to the same receiver).

    Raises ``NotFound`` (unknown or another account's job) and ``Conflict`` (the job has not
    ended, or nothing in it errored)."""
    parent = await asyncio.to_thread(store.get_job, job_id, account.id)
    if parent is None:
        raise NotFound(f"no job {job_id}")
    if parent.status not in FINAL_STATUSES:
        raise Conflict(f"job {job_id} is {parent.status}; retry it once it has ended")
    jobs.ensure_results_kept(parent)  # which URLs errored is in the removed parts
    lines = await asyncio.to_thread(errored_input, storage, job_id)
    if not lines:
        raise Conflict(f"job {job_id} has no errored URLs to retry")
    spec = {k: v for k, v in parent.spec.items() if k != "source"}  # its input is staged here
    row = jobs.job_row(
        account.id, parent.name, parent.priority, spec, len(lines), parent_job_id=parent.id
    )
    # the original's staged lines as they are: the URL, its overrides and its meta
    await asyncio.to_thread(
        storage.write_bytes_atomic, jobs.input_url(storage, row.id), b"".join(lines)
    )
    submitted = await _launch(
        row, settings=settings, store=store, storage=storage, start=start, account=account
    )
    return submitted.job


def errored_input(storage: Storage, job_id: str) -> list[bytes]:
    """The staged input lines (``jobs/<id>/input.ndjson``) of the job's errored results, in
    input order. Only what the parts hold counts: URLs a cancel skipped did not error."""
    errored: set[int] = set()
    for batch in output.iter_part_batches(
        storage, part_urls(storage, job_id), ["input_index", "status"]
    ):
        hit = pc.equal(batch.column(1), "error")
        errored.update(pc.filter(batch.column(0), hit).to_pylist())
    if not errored:
        return []
    lines: list[bytes] = []
    with storage.open(jobs.input_url(storage, job_id), "rb") as fh:
        for index, line in enumerate(fh):
            if index in errored:
                lines.append(line if line.endswith(b"\n") else line + b"\n")
    return lines


async def _launch(
    row: JobRow,
    *,
    settings: Settings,
    store: Store,
    storage: Storage,
    start: StartFlowRun,
    account: AccountRow,
    key: _Key | None = None,
) -> Submitted:
    """Commit the row (with its idempotency key, in one transaction) and start its flow run.

    The row is committed before the flow run starts, so a ``GET`` never 404s. A scheduler that
    is up but busy past the starter's bound (``SchedulerBusy``) leaves the job ``queued`` without
    a flow run: the resume service starts it (``deployments/reaper.py``), so an overloaded
    Prefect delays jobs and fails none. When a concurrent
    request committed the same key first, its job is the answer and nothing else starts: that
    job's own request starts its flow run, even if it has not yet done so."""
    max_active = plan_for(account.plan, settings).max_concurrent_jobs
    try:
        if key is None:
            await asyncio.to_thread(store.insert_job, row, max_active=max_active)
            held = None
        else:
            held = await asyncio.to_thread(
                store.insert_job_once,
                row,
                key.key,
                key.body_hash,
                not_before=_not_before(settings),
                max_active=max_active,
            )
    except LimitExceeded:  # nothing was created: drop the staged input
        await asyncio.to_thread(storage.rm, storage.url("jobs", row.id), recursive=True)
        raise
    if key is not None and held is not None and held.job_id != row.id:
        await asyncio.to_thread(storage.rm, storage.url("jobs", row.id), recursive=True)
        return await _replay(store, key, held.body_hash, held.job_id)
    await start_job(row, settings=settings, store=store, start=start, key=key.key if key else None)
    return Submitted(row)


async def start_job(
    row: JobRow,
    *,
    settings: Settings,
    store: Store,
    start: StartFlowRun,
    key: str | None = None,
) -> JobRow:
    """Start the flow run of a committed ``queued`` job and record its id on the row.

    A scheduler that is up but busy (``SchedulerBusy``) leaves the job ``queued`` for the resume
    service; any other failure fails the job, releases ``key`` (an Idempotency-Key, so the
    caller's retry makes a job that runs) and raises ``Unavailable``."""
    try:
        row.flow_run_id = await start(row, settings)
    except SchedulerBusy as exc:  # up but busy: the resume service starts the queued job
        log.warning("job %s stays queued: %s", row.id, exc)
        return row
    except Exception as exc:  # the job can't run; say why, keep nothing running
        log.exception("could not start the flow run of %s", row.id)
        await asyncio.to_thread(fail_job, row.id, settings, f"could not start the flow run: {exc}")
        if key is not None:  # let the caller's retry with the same key create a job that runs
            await asyncio.to_thread(store.release_idempotency, row.account_id, key, row.id)
        if isinstance(exc, Unavailable):  # the starter named the cause (api.prefect_access)
            raise
        raise Unavailable(f"the scheduler (Prefect) could not start the job ({exc})") from exc
    await asyncio.to_thread(store.update_job, row.id, flow_run_id=row.flow_run_id)
    return row


async def _replay(store: Store, key: _Key, held_hash: str, job_id: str) -> Submitted:
    if held_hash != key.body_hash:
        raise Conflict(f"Idempotency-Key {key.key!r} was used with a different body (job {job_id})")
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is None:  # the key's job is gone (removed by hand): nothing to replay
        raise Conflict(f"Idempotency-Key {key.key!r} refers to a job that no longer exists")
    return Submitted(job, replayed=True)


def _not_before(settings: Settings) -> datetime:
    return utcnow() - timedelta(seconds=settings.idempotency_ttl_s)
