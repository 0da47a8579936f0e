"""The embedded worker: serves the ``scrape-job/<priority>`` deployments and runs the reaper.

``python -m deployments.serve`` (``shoal up`` starts it). It polls the Prefect server every
``SHOAL_WORKER_POLL_S`` (default 1 s) so a new job starts within a second or two.
"""

from __future__ import annotations

import asyncio
import logging

from prefect import aserve

from deployments.reaper import reap_forever
from flows.scrape_job import scrape_job
from shoal.settings import get_settings

PRIORITIES = ("high", "normal", "low")


async def main() -> None:
    settings = get_settings()
    deployments = [
        await scrape_job.ato_deployment(
            name=p, tags=["shoal", f"priority:{p}"], description=f"Shoal jobs, {p} priority"
        )
        for p in PRIORITIES
    ]
    reaper = asyncio.create_task(reap_forever(settings))
    try:
        await aserve(
            *deployments,
            limit=settings.worker_max_jobs,
            query_seconds=settings.worker_poll_s,
            print_starting_message=False,
        )
    finally:
        reaper.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
