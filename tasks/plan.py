"""Task: count a job's staged input and cut it into chunks."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from shoal.jobs import input_url
from shoal.plan import plan_chunks
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store


@task(name="plan_job", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
async def plan_job(job_id: str) -> list[dict[str, Any]]:
    """The job's chunks (as dicts); also records ``urls_total``."""
    settings = get_settings()
    storage = get_storage(settings)
    chunks, total = await asyncio.to_thread(
        plan_chunks, storage, input_url(storage, job_id), settings
    )
    await asyncio.to_thread(get_store(settings).update_job, job_id, urls_total=total)
    return [asdict(c) for c in chunks]
