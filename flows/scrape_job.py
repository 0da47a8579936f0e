"""The ``scrape-job`` flow: one flow run per job.

Plan the staged input into chunks, run the ``scrape_chunk`` task over them a few at a time (all
chunks share the job's fetch engine, so ``concurrency`` caps requests in flight across the job),
watch for a cancel or the lifetime deadline between and inside chunks, then build the output.
The flow run ends in the state matching the job: ``Completed``, ``Completed`` named ``Partial``,
``Cancelled`` or ``Failed``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.runtime import flow_run as current_run
from prefect.states import Cancelled, Completed, Failed, State

from shoal import chunkprocs
from shoal.contract import FINAL_STATUSES, JobSpec
from shoal.errors import JobFailed
from shoal.finalize import fail_job, finalize_job
from shoal.jobs import input_url
from shoal.scrape import JobRuntime
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import JobRow, Store, aware, get_store, utcnow
from tasks import build_output, plan_job, scrape_chunk

log = logging.getLogger(__name__)


def _state_for(row: JobRow) -> State[Any]:
    msg = f"{row.urls_done} URLs, {row.urls_errored} errored"
    if row.status == "completed":
        return Completed(message=msg)
    if row.status == "partial":
        return Completed(name="Partial", message=msg)
    if row.status == "cancelled":
        return Cancelled(message=row.error or f"cancelled: {msg}")
    return Failed(message=row.error or "failed")


async def _check_stop(rt: JobRuntime, row: JobRow) -> None:
    """Stop the job on a cancel request or past its lifetime."""
    started = aware(row.started_at) or utcnow()
    lifetime = rt.settings.job_lifetime_s
    if await asyncio.to_thread(rt.store.cancel_requested, rt.job_id):
        rt.request_stop("cancel")
    elif (utcnow() - started).total_seconds() > lifetime:
        rt.request_stop(f"job lifetime of {lifetime} s reached; stopped with what finished")


async def _monitor(rt: JobRuntime, store: Store, row: JobRow, total: int, artifact: Any) -> None:
    """Every ``progress_interval_s``: write live counters, look for a cancel or the deadline,
    and move the progress artifact."""
    last_pct = -1.0
    while True:
        await asyncio.sleep(rt.settings.progress_interval_s)
        await asyncio.to_thread(rt.flush_counters)
        await _check_stop(rt, row)
        done = (await asyncio.to_thread(store.counters, rt.job_id)).done
        pct = round(100.0 * done / total, 1) if total else 100.0
        if pct != last_pct:
            await aupdate_progress_artifact(artifact, progress=pct)
            last_pct = pct


async def _run_chunks(
    rt: JobRuntime, row: JobRow, in_url: str, chunks: list[dict[str, Any]], n_procs: int = 0
) -> None:
    """Run the chunk tasks a few at a time, in order, until done or stopped.

    With ``n_procs`` worker processes, each gets ``chunkprocs.PER_PROC`` chunks at a time."""
    size = max((c["count"] for c in chunks), default=1)
    window = max(2, min(8, math.ceil(2 * rt.spec.concurrency / size) + 1))
    if n_procs:
        window = n_procs * chunkprocs.PER_PROC
    gate = asyncio.Semaphore(window)

    async def run(chunk: dict[str, Any]) -> None:
        async with gate:
            if rt.stop.is_set():
                return
            summary = await scrape_chunk(rt.job_id, in_url, chunk)
            if not summary["complete"] and not rt.stop.is_set():
                # a worker process stopped the chunk (cancel, deadline) before our monitor saw it
                await _check_stop(rt, row)

    await asyncio.gather(*(run(c) for c in chunks))


def _on_cancellation(flow: Flow, flow_run: FlowRun, state: State[Any]) -> None:
    """A cancel from the Prefect UI: keep what finished, end the job ``cancelled``."""
    procs = chunkprocs.current()
    if procs is not None:  # when the hook runs in the flow process: no part written after this
        procs.kill()
    job_id = flow_run.parameters.get("job_id")
    if job_id:
        finalize_job(job_id, get_settings(), cancelled=True, error="cancelled from the Prefect UI")


@flow(name="scrape-job", on_cancellation=[_on_cancellation], log_prints=True)
async def scrape_job(job_id: str) -> State[Any]:
    """Run one Shoal job end to end (see the module docstring)."""
    logger = get_run_logger()
    settings = get_settings()
    store = get_store(settings)
    row = await asyncio.to_thread(store.get_job, job_id)
    if row is None:
        # the API writes the row before it starts the run: this worker reads another store
        from shoal.settings import missing_job_message

        return Failed(message=missing_job_message(settings, job_id))
    if row.status in FINAL_STATUSES:
        return _state_for(row)
    row = await asyncio.to_thread(store.mark_running, job_id, current_run.get_id())
    rt = None
    try:
        spec = JobSpec.model_validate(row.spec)
        procs = chunkprocs.get_chunk_procs(settings)
        # start them while the job is planned, when it will have more than one chunk
        many = row.urls_total is None or row.urls_total > settings.chunk_min_urls
        if procs is not None and many:
            procs.prestart(min(procs.n, spec.concurrency // chunkprocs.MIN_PER_PROC))
        chunks = await plan_job(job_id)
        total = sum(c["count"] for c in chunks)
        logger.info("job %s: %d URLs in %d chunks", job_id, total, len(chunks))
        artifact = await acreate_progress_artifact(
            progress=0.0, description=f"Shoal job {job_id}: share of URLs processed"
        )
        rt = JobRuntime.open(job_id, spec, settings)
        if await asyncio.to_thread(store.cancel_requested, job_id):
            rt.request_stop("cancel")  # cancelled while queued
        shares = (
            chunkprocs.plan_shares(spec.concurrency, rt.host_cap(), procs.n, len(chunks))
            if procs is not None
            else []
        )
        if procs is not None and shares:
            procs.start_job(job_id, shares)
            logger.info("job %s: chunks in %d processes, caps %s", job_id, len(shares), shares)
        monitor = asyncio.create_task(_monitor(rt, store, row, total, artifact))
        try:
            in_url = input_url(get_storage(settings), job_id)
            await _run_chunks(rt, row, in_url, chunks, len(shares))
        finally:
            monitor.cancel()
            if procs is not None:
                if shares:
                    await asyncio.to_thread(procs.end_job, job_id)
                await asyncio.to_thread(chunkprocs.shutdown_if_idle)
            await asyncio.to_thread(rt.flush_counters)
        stopped = rt.stop.is_set()
        reason = None if rt.stop_reason == "cancel" else rt.stop_reason
        row = await build_output(job_id, cancelled=stopped, error=reason)
        await aupdate_progress_artifact(artifact, progress=100.0)
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        # JobFailed says why for the caller (unreadable input...); anything else is ours
        why = str(exc) if isinstance(exc, JobFailed) else f"internal error: {exc}"
        failed = await asyncio.to_thread(fail_job, job_id, settings, why)
        return Failed(message=(failed.error if failed else None) or str(exc))
    finally:
        if rt is not None:
            await rt.close()
        await asyncio.to_thread(chunkprocs.shutdown_if_idle)  # also when planning failed
    await acreate_markdown_artifact(
        key=f"job-{job_id.lower().replace('_', '-')}",
        markdown=(
            f"# Shoal job `{job_id}`\n\n| | |\n|---|---|\n| status | **{row.status}** |\n"
            f"| URLs | {row.urls_done} of {row.urls_total} |\n| errored | {row.urls_errored} |\n"
            f"| credits | {row.credits_used} |\n| error | {row.error or ''} |\n"
        ),
        description=f"Summary of Shoal job {job_id}",
    )
    return _state_for(row)
