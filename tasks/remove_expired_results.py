"""Task: one retention pass (``shoal.retention``)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from shoal.retention import remove_expired
from shoal.settings import get_settings


@task(name="remove_expired_results", retries=1, retry_delay_seconds=30, cache_policy=NO_CACHE)
async def remove_expired_results() -> dict[str, Any]:
    """Remove the files of jobs past retention; prune old keys and counters. Returns the report."""
    report = await asyncio.to_thread(remove_expired, get_settings())
    return asdict(report)
