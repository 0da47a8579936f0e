"""The embedded worker: serves the ``scrape-job/embedded-<priority>`` deployments and
``maintenance/embedded`` (every ``SHOAL_MAINTENANCE_INTERVAL_S``). The resume and webhook
services run apart (``python -m deployments.services``), so they also serve pool workers.

It also keeps every Shoal schedule a schedule of its deployment (``prefect_schedules.reconcile``
at start, and every few minutes): registering the deployments again keeps them, but the store is
the source of truth should Prefect have lost one.

``python -m deployments.serve`` (``shoal up`` starts it). It polls the Prefect server every
``SHOAL_WORKER_POLL_S`` (default 0.5 s), and each flow run is a fork of a warm process
(``deployments/warm_start.py``), so a new job is running within a second. SIGINT or SIGTERM
stops it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from prefect.runner import Runner

from deployments import prefect_schedules, warm_start
from deployments.liveness import use_heartbeats
from flows.maintenance import maintenance
from flows.scrape_job import scrape_job
from shoal.settings import (
    EMBEDDED_MAINTENANCE,
    PRIORITIES,
    Settings,
    deployment_names,
    get_settings,
)
from shoal.store import get_store

__all__ = ["PRIORITIES", "main"]

log = logging.getLogger(__name__)
#: how often the worker checks that every Shoal schedule has its Prefect schedule
RECONCILE_EVERY_S = 300.0


async def _keep_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Keep SIGINT/SIGTERM ours. Prefect's runner installs a SIGTERM handler when it starts that
    does not stop it (3.8.8: it calls an async ``stop`` without awaiting it), which left the
    worker to be SIGKILLed; take the signals back whenever something else holds them."""
    while True:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if getattr(signal.getsignal(sig), "__name__", "") == "handle_sigterm":
                loop.add_signal_handler(sig, stop.set)
        await asyncio.sleep(0.2)


async def _keep_schedules(settings: Settings) -> None:
    """Re-create Shoal schedules Prefect lacks, now that the deployments are registered, and
    again every ``RECONCILE_EVERY_S`` (``deployments/prefect_schedules.py``: why they can go)."""
    store = get_store(settings)
    while True:
        try:
            done = await prefect_schedules.reconcile(settings, store)
            if done.created or done.removed:
                log.info(
                    "schedules: %d put on Prefect, %d strays removed",
                    len(done.created),
                    len(done.removed),
                )
        except Exception as exc:  # Prefect busy or down: next time
            log.warning("could not reconcile schedules with Prefect: %s", exc)
        await asyncio.sleep(RECONCILE_EVERY_S)


async def main() -> None:
    settings = get_settings()
    use_heartbeats(settings)  # before the warm process forks: its flow runs inherit it
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(warm_start.install)  # flow runs fork from a warm process
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # the flows themselves, not deployments loaded from an entrypoint: the runner then starts a
    # flow run with ``run_flow_in_subprocess``, which ``warm_start`` forks from a warm process
    # (with ``aserve(*deployments)`` every run was a cold ``python -m prefect.engine``)
    # Its own deployment names (``deployment_names(embedded=True)``), never the pool's of
    # prefect.yaml: registering a name takes the deployment over (work pool none), and the
    # runner pauses what it registered when it stops. So pool workers keep their deployments
    # and schedule, and this stack pauses only its own.
    runner = Runner(
        pause_on_shutdown=True, limit=settings.worker_max_jobs, query_seconds=settings.worker_poll_s
    )
    for p, full_name in deployment_names(settings, embedded=True).items():
        await runner.aadd_flow(
            scrape_job,
            name=full_name.split("/", 1)[1],
            tags=["shoal", f"priority:{p}", "embedded"],
            description=f"Shoal jobs, {p} priority (embedded worker)",
        )
    await runner.aadd_flow(
        maintenance,
        name=EMBEDDED_MAINTENANCE.split("/", 1)[1],
        interval=settings.maintenance_interval_s,
        tags=["shoal", "maintenance"],
        description="Retention: removes the files of jobs past their plan's retention",
    )
    tasks = [
        asyncio.create_task(runner.start()),
        asyncio.create_task(_keep_signals(loop, stop)),
        asyncio.create_task(_keep_schedules(settings)),
    ]
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([tasks[0], stopping], return_when=asyncio.FIRST_COMPLETED)
    for t in (*tasks, stopping):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
