"""Prefect tasks: thin wrappers that add retries, timeouts, caching and logging to ``shoal``."""

from tasks.output import build_output
from tasks.plan import plan_job
from tasks.scrape import scrape_chunk

__all__ = ["build_output", "plan_job", "scrape_chunk"]
