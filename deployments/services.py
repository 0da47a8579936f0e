"""Shoal's services: resuming jobs whose runs died, and delivering webhooks.

``python -m deployments.services`` (``shoal services``; ``shoal up`` runs one). They need the
Prefect API (``PREFECT_API_URL``) and the job store (``SHOAL_DATABASE_URL``), nothing of a
worker's, so an operator runs them beside any number of plain Prefect workers, on any machine,
as many copies as they like: a resume is a compare-and-set (``deployments/reaper.py``), a
webhook event is claimed with a lease (``deployments/webhooks.py``), and the zombie automation
is kept by name (``deployments/liveness.py``). SIGINT or SIGTERM stops them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from deployments.liveness import ensure_zombie_automation
from deployments.reaper import reap_forever
from deployments.webhooks import dispatch_forever
from shoal.settings import get_settings

log = logging.getLogger("shoal.services")


async def _keep_automation(stop: asyncio.Event) -> None:
    """Make sure the zombie automation exists; retry while Prefect is not reachable yet."""
    settings = get_settings()
    pause = 1.0
    while not stop.is_set():
        try:
            await ensure_zombie_automation(settings)
            return
        except Exception as exc:
            log.warning("could not set up the zombie automation (%s); again in %.0f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)


async def main() -> None:
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_keep_automation(stop)),
        asyncio.create_task(reap_forever(settings)),
        asyncio.create_task(dispatch_forever(settings)),
    ]
    log.info("services running: resume every %.0f s, webhooks", settings.resume_poll_s)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
