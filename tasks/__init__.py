"""Prefect tasks: thin wrappers that add retries, timeouts, caching and logging to ``shoal``."""

from tasks.maintenance import remove_expired_results
from tasks.output import build_output
from tasks.plan import plan_job
from tasks.scrape import chunk_summary, scrape_chunk

__all__ = [
    "build_output",
    "chunk_summary",
    "plan_job",
    "remove_expired_results",
    "scrape_chunk",
]
