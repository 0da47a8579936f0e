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
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.runtime import flow_run as current_run
from prefect.states import Cancelled, Completed, Failed, State

from shoal import chunkprocs, downloads, output, quality, schedules
from shoal.contract import FINAL_STATUSES, JobSpec
from shoal.errors import JobFailed
from shoal.finalize import fail_job, finalize_job
from shoal.jobs import input_url
from shoal.report import change_table, changes_sample, run_report, summary_markdown
from shoal.scrape import JobRuntime
from shoal.settings import Settings, get_settings
from shoal.storage import get_storage
from shoal.store import JobRow, Store, aware, get_store, utcnow
from tasks import chunk_summary, finish_job, plan_job, scrape_chunk

log = logging.getLogger(__name__)


#: how a run's stop reason starts when a later run of the job owns it
SUPERSEDED = "superseded"


def _lost(rt: JobRuntime) -> bool:
    return bool(rt.stop_reason and rt.stop_reason.startswith(SUPERSEDED))


def _state_for(row: JobRow) -> State[Any]:
    msg = f"{row.urls_done} URLs, {row.urls_errored} errored"
    gates = quality.describe(row.quality)  # a failed quality gate names itself on the run
    if gates:
        msg = f"{msg}; {gates}"
    if row.status == "completed":
        return Completed(message=msg)
    if row.status == "partial":
        return Completed(name="Partial", message=msg)
    if row.status == "cancelled":
        return Cancelled(message=row.error or f"cancelled: {msg}")
    return Failed(message=row.error or "failed")


async def _check_stop(rt: JobRuntime, row: JobRow, attempt: int = 0) -> None:
    """Stop the job on a cancel request, past its lifetime, or when a later run owns it."""
    started = aware(row.started_at) or utcnow()
    lifetime = rt.settings.job_lifetime_s
    owner, owner_attempt = await asyncio.to_thread(rt.store.run_owner, rt.job_id)
    if _later_run_owns(owner, owner_attempt, None, attempt):  # by attempt: what a resume bumps
        # this run was declared dead (its heartbeats did not arrive) and the job resumed
        # elsewhere: stop at once and leave the job to its new run
        rt.request_stop(f"{SUPERSEDED}: flow run {owner} (resume {owner_attempt}) owns the job")
    elif await asyncio.to_thread(rt.store.cancel_requested, rt.job_id):
        rt.request_stop("cancel")
    elif (utcnow() - started).total_seconds() > lifetime:
        rt.request_stop(f"job lifetime of {lifetime} s reached; stopped with what finished")


async def _monitor(
    rt: JobRuntime, store: Store, row: JobRow, total: int, artifact: Any, attempt: int = 0
) -> None:
    """Every ``progress_interval_s``: write live counters, look for a cancel or the deadline,
    and move the progress artifact."""
    last_pct = -1.0
    while True:
        await asyncio.sleep(rt.settings.progress_interval_s)
        await asyncio.to_thread(rt.flush_counters)
        await _check_stop(rt, row, attempt)
        if _lost(rt):
            return
        done = (await asyncio.to_thread(store.counters, rt.job_id)).done
        pct = round(100.0 * done / total, 1) if total else 100.0
        if pct != last_pct:
            await aupdate_progress_artifact(artifact, progress=pct)
            last_pct = pct


async def _run_chunks(
    rt: JobRuntime,
    row: JobRow,
    in_url: str,
    chunks: list[dict[str, Any]],
    n_procs: int = 0,
    attempt: int = 0,
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
            state = await scrape_chunk(rt.job_id, in_url, chunk, return_state=True)
            summary = await chunk_summary(state)
            # each chunk process has its own browsers: the job's rendering is the sum
            rt.rendered += summary.get("rendered", 0)
            rt.render_s += summary.get("render_s", 0.0)
            if not summary["complete"] and not rt.stop.is_set():
                # a worker process stopped the chunk (cancel, deadline) before our monitor saw it
                await _check_stop(rt, row, attempt)

    # a TaskGroup, not gather: a chunk that fails for good (retries spent) cancels its siblings
    # at once, rather than leaving them fetching for a job that is about to fail
    try:
        async with asyncio.TaskGroup() as group:
            for c in chunks:
                group.create_task(run(c))
    except* Exception as failed:
        raise failed.exceptions[0] from None  # the first cause names the job's error


def _on_cancellation(flow: Flow, flow_run: FlowRun, state: State[Any]) -> None:
    """A cancel from the Prefect UI: keep what finished, end the job ``cancelled``.

    Where the hook runs in the flow process, the chunks (here and in chunk processes) first
    write their finished rows (bounded, ~1.5 s), then nothing is written after this; where it
    runs in the runner, the flow process has written them as it exited. The output is built from
    every piece, so the job ends as a ``DELETE`` does: every persisted row, their credits."""
    output.persist_all(seal=True)
    procs = chunkprocs.current()
    if procs is not None:
        procs.persist_then_kill()
    settings = get_settings()
    job_id = flow_run.parameters.get("job_id") or _scheduled_job(flow_run, settings)
    if not job_id:
        return
    owner, owner_attempt = get_store(settings).run_owner(job_id)
    mine = int(flow_run.parameters.get("resume") or 0)
    if _later_run_owns(owner, owner_attempt, str(flow_run.id), mine):
        return  # a run that had lost the job to a later one: cancelling it ends nothing
    finalize_job(job_id, settings, cancelled=True, error="cancelled from the Prefect UI")


async def _publish_run_page(
    row: JobRow, settings: Settings, store: Store, rendered: int = 0, render_s: float = 0.0
) -> None:
    """What an operator reads on the run's page: a summary (status, counts, errors by code, the
    hosts that failed most, where the output is, pages rendered and the time rendering took)
    and a link to the download. Never fails the job: it has ended already."""
    try:
        storage = get_storage(settings)
        report = await asyncio.to_thread(run_report, storage, output.part_urls(storage, row.id))
        account = await asyncio.to_thread(store.get_account, row.account_id)
        outputs = row.outputs or []
        location = ", ".join(o["url"] for o in outputs) or None
        key = f"job-{row.id.lower().replace('_', '-')}"
        await acreate_markdown_artifact(
            key=key,
            markdown=summary_markdown(
                row,
                report,
                account_name=account.name if account else None,
                output_location=location,
                rendered=rendered,
                render_s=render_s,
            ),
            description=f"Summary of Shoal job {row.id}",
        )
        if row.changes:
            sample = await asyncio.to_thread(changes_sample, storage, row)
            c = row.changes
            await acreate_table_artifact(
                key=f"{key}-changes",
                table=change_table(c, sample),
                description=f"Changes of Shoal job {row.id} since {c['previous_job_id']}: "
                f"{c['added']} added, {c['removed']} removed, {c['changed']} changed, "
                f"{c['unchanged']} unchanged (most changed fields first, one example each)",
            )
        expires = aware(row.output_expires_at)
        if outputs and expires is not None:
            link = downloads.sign(settings, row.id, outputs[0]["name"], expires)
            await acreate_link_artifact(
                key=f"{key}-download",
                link=link,
                link_text=f"{outputs[0]['name']} ({outputs[0]['rows']} rows)",
                description=f"Download of Shoal job {row.id}, valid until {expires:%F %H:%M} UTC",
            )
    except Exception:
        log.exception("job %s: could not publish its run page", row.id)


def _scheduled_job(flow_run: FlowRun, settings: Settings) -> str | None:
    """The job a scheduled flow run (parameters ``{schedule_id}``) made for itself, if any."""
    schedule_id = flow_run.parameters.get("schedule_id")
    if not schedule_id:
        return None
    job = get_store(settings).schedule_job_of(schedule_id, str(flow_run.id))
    return job.id if job is not None else None


def _later_run_owns(owner: str | None, owner_attempt: int, me: str | None, attempt: int) -> bool:
    """Whether another run of the job owns it now, so this one (``me``, attempt ``attempt``)
    must not touch it: a later attempt always wins (``Store.mark_running``); where ``me`` is
    given, another run's id recorded for the job wins too."""
    return owner_attempt > attempt or bool(me and owner and owner != me)


def _superseded(owner: str | None, owner_attempt: int) -> State[Any]:
    """The state a run ends in when another run of its job owns it."""
    return Cancelled(
        name="Superseded",
        message=f"{SUPERSEDED}: flow run {owner} (resume {owner_attempt}) owns the job; this "
        "run stopped without touching it",
    )


async def _name_run(job_id: str, store: Store) -> None:
    """Name a scheduled run after its job, as the runs the API starts are (best effort)."""
    from prefect.client.orchestration import get_client

    row = await asyncio.to_thread(store.get_job, job_id)
    name = f"{job_id} · {row.name}" if row is not None and row.name else job_id
    try:
        async with get_client() as client:
            await client.update_flow_run(UUID(str(current_run.get_id())), name=name)
    except Exception:
        log.warning("could not name the flow run of job %s", job_id, exc_info=True)


@flow(name="scrape-job", on_cancellation=[_on_cancellation], log_prints=True)
async def scrape_job(
    job_id: str | None = None,
    resume: int = 0,
    previous_flow_run: str | None = None,
    schedule_id: str | None = None,
) -> State[Any]:
    """Run one Shoal job end to end (see the module docstring).

    ``resume`` and ``previous_flow_run`` are set by the resume service on a run that takes over
    a job whose run died: this run then owns the job as attempt ``resume`` (a later attempt
    always wins, so a run declared dead that still lives stops by itself).

    A run Prefect's scheduler started for a Shoal schedule has only ``schedule_id``: it first
    makes the schedule's next job (``shoal.schedules.begin_scheduled_run``, once per flow run)
    and runs it, or ends ``Completed`` named ``Skipped`` while the previous run is going."""
    logger = get_run_logger()
    settings = get_settings()
    store = get_store(settings)
    if job_id is None:
        if not schedule_id:
            return Failed(message="give job_id (a Shoal job) or schedule_id (a Shoal schedule)")
        begun = await asyncio.to_thread(
            schedules.begin_scheduled_run, schedule_id, str(current_run.get_id()), settings
        )
        logger.info(begun.message)
        if begun.job_id is None:
            if begun.skipped:
                return Completed(name="Skipped", message=begun.message)
            return (
                Failed(message=begun.message) if begun.failed else Completed(message=begun.message)
            )
        job_id = begun.job_id
        await _name_run(job_id, store)
    row = await asyncio.to_thread(store.get_job, job_id)
    if row is None:
        # the API writes the row before it starts the run: this worker reads another store
        from shoal.settings import missing_job_message

        return Failed(message=missing_job_message(settings, job_id))
    if row.status in FINAL_STATUSES:
        return _state_for(row)
    me = current_run.get_id()
    row = await asyncio.to_thread(store.mark_running, job_id, me, resume)
    if _later_run_owns(row.flow_run_id, row.resume_count or 0, me, resume):
        lost = _superseded(row.flow_run_id, row.resume_count or 0)
        logger.warning(lost.message)
        return lost
    if resume:
        logger.warning(
            "job %s: resume %d of %d, taking over from flow run %s; finished chunks and the "
            "rows they kept are not fetched again",
            job_id,
            resume,
            settings.max_resumes,
            previous_flow_run,
        )
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
        monitor = asyncio.create_task(_monitor(rt, store, row, total, artifact, resume))
        try:
            in_url = input_url(get_storage(settings), job_id)
            await _run_chunks(rt, row, in_url, chunks, len(shares), resume)
        finally:
            monitor.cancel()
            if procs is not None and _lost(rt):
                procs.kill()  # their rows in flight are the new run's to fetch
            if procs is not None:
                if shares:
                    await asyncio.to_thread(procs.end_job, job_id)
                await asyncio.to_thread(chunkprocs.shutdown_if_idle)
            await asyncio.to_thread(rt.flush_counters)
        if _lost(rt):
            logger.warning("job %s: %s", job_id, rt.stop_reason)
            return Cancelled(name="Superseded", message=rt.stop_reason)
        stopped = rt.stop.is_set()
        reason = None if rt.stop_reason == "cancel" else rt.stop_reason
        row = await finish_job(job_id, cancelled=stopped, error=reason)
        # the true fraction: a job cancelled at 65 of 300 reads 21.7, not 100
        pct = round(100.0 * row.urls_done / row.urls_total, 1) if row.urls_total else 100.0
        await aupdate_progress_artifact(artifact, progress=pct)
        if rt.rendered or rt.render_s:
            logger.info(
                "job %s: %d pages rendered, %.1f s rendering", job_id, rt.rendered, rt.render_s
            )
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        # JobFailed says why for the caller (unreadable input...); anything else is ours
        why = str(exc) if isinstance(exc, JobFailed) else f"internal error: {exc}"
        owner, owner_attempt = await asyncio.to_thread(store.run_owner, job_id)
        if _later_run_owns(owner, owner_attempt, me, resume):
            return Failed(message=f"{why} (the job belongs to a later run now)")
        failed = await asyncio.to_thread(fail_job, job_id, settings, why)
        return Failed(message=(failed.error if failed else None) or str(exc))
    finally:
        if rt is not None:
            await rt.close()
        await asyncio.to_thread(chunkprocs.shutdown_if_idle)  # also when planning failed
    rendered, render_s = (rt.rendered, rt.render_s) if rt is not None else (0, 0.0)
    await _publish_run_page(row, settings, store, rendered, render_s)
    return _state_for(row)
