"""Task: finish a job: build its output file(s) and write its final status."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from shoal.finalize import finalize_job
from shoal.settings import get_settings
from shoal.store import JobRow


@task(name="finish_job", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
async def finish_job(job_id: str, cancelled: bool = False, error: str | None = None) -> JobRow:
    """Parts -> the asked format, in input order; the job row gets its final status."""
    return await asyncio.to_thread(
        finalize_job, job_id, get_settings(), cancelled=cancelled, error=error
    )
