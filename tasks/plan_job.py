"""Task: stage a job's file input, count its staged input and cut it into chunks."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from shoal import chunkprocs, conditional
from shoal.chunking import plan_chunks
from shoal.contract import JobSpec
from shoal.errors import JobFailed
from shoal.jobs import input_url
from shoal.settings import get_settings
from shoal.staging import stage_input
from shoal.storage import get_storage
from shoal.store import get_store

log = logging.getLogger(__name__)


def _retry_unless_job_failed(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    # an unusable input (no such object, too many URLs...) stays unusable: fail at once
    return not isinstance(state.data, JobFailed)


@task(
    name="plan_job",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_unless_job_failed,
    cache_policy=NO_CACHE,
)
async def plan_job(job_id: str) -> list[dict[str, Any]]:
    """The job's chunks (as dicts); also records ``urls_total``.

    A file input (upload, S3) is staged first (once: a resumed run finds it staged). Raises
    ``JobFailed`` when that input cannot be used."""
    settings = get_settings()
    storage = get_storage(settings)
    store = get_store(settings)
    row = await asyncio.to_thread(store.get_job, job_id)
    if row is None:
        raise LookupError(job_id)
    await asyncio.to_thread(stage_input, row, settings)
    # a resumed run cuts the chunks its first run cut (their parts and cache entries exist)
    slots = max(2, chunkprocs.resolve_processes(settings)) * chunkprocs.PER_PROC
    chunks, total = await asyncio.to_thread(
        plan_chunks,
        storage,
        input_url(storage, job_id),
        settings,
        slots=slots,
        size=row.chunk_size,
    )
    spec = JobSpec.model_validate(row.spec)
    if conditional.previous_job_id(spec) is not None:
        try:  # the previous run's validators, joined once here so each chunk reads its range
            await asyncio.to_thread(
                conditional.prepare_job, storage, store, job_id, spec, input_url(storage, job_id)
            )
        except Exception:  # an optimization: the chunks try again, then fetch whole
            log.exception("job %s: could not prepare conditional requests", job_id)
    size = row.chunk_size or (chunks[0].count if chunks else None)
    await asyncio.to_thread(store.update_job, job_id, urls_total=total, chunk_size=size)
    return [asdict(c) for c in chunks]
