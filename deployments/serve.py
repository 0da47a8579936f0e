"""The embedded worker: serves the ``scrape-job/embedded-<priority>`` deployments and
``maintenance/embedded`` (every ``SHOAL_MAINTENANCE_INTERVAL_S``). The resume and webhook
services run apart (``python -m deployments.services``), so they also serve pool workers.

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

from deployments import warm_start
from deployments.liveness import use_heartbeats
from flows.maintenance import maintenance
from flows.scrape_job import scrape_job
from shoal.settings import EMBEDDED_MAINTENANCE, PRIORITIES, deployment_names, get_settings

__all__ = ["PRIORITIES", "main"]


async def _keep_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Keep SIGINT/SIGTERM ours. Prefect's runner installs a SIGTERM handler when it starts that
    does not stop it (3.8.8: it calls an async ``stop`` without awaiting it), which left the
    worker to be SIGKILLed; take the signals back whenever something else holds them."""
    while True:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if getattr(signal.getsignal(sig), "__name__", "") == "handle_sigterm":
                loop.add_signal_handler(sig, stop.set)
        await asyncio.sleep(0.2)


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
    ]
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([tasks[0], stopping], return_when=asyncio.FIRST_COMPLETED)
    for t in (*tasks, stopping):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
