"""Prefect tasks: thin wrappers that add retries, timeouts, caching and logging to ``shoal``.

Each module is named for the task it holds; import the tasks from here (``from tasks import
scrape_chunk``): past this import, ``tasks.scrape_chunk`` is the task, not its module."""

from tasks.deliver_webhook import deliver_webhook
from tasks.finish_job import finish_job
from tasks.plan_job import plan_job
from tasks.remove_expired_results import remove_expired_results
from tasks.scrape_chunk import chunk_summary, scrape_chunk

__all__ = [
    "chunk_summary",
    "deliver_webhook",
    "finish_job",
    "plan_job",
    "remove_expired_results",
    "scrape_chunk",
]
