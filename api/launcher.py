"""The API's side of Prefect: a warm client at start-up. Jobs' flow runs are started by
``deployments.launch.start_flow_run``; the API never imports flow code."""

from __future__ import annotations

import asyncio
import logging
import os

from prefect.client.orchestration import get_client

from shoal.settings import Settings

log = logging.getLogger(__name__)


async def warm_up(settings: Settings, attempts: int = 60, pause_s: float = 1.0) -> None:
    """Make the first job's POST as quick as the next ones: open the Prefect client and read the
    deployment once at start-up (measured: the first ``run_deployment`` took 2.2 s, later ones
    0.05 s). Retries while the worker has not registered the deployments yet; never raises.
    Skipped without ``PREFECT_API_URL``: a client would start a throwaway local server."""
    if not os.environ.get("PREFECT_API_URL"):
        return
    name = f"{settings.deployment_prefix}/normal"
    for _ in range(attempts):
        try:
            async with get_client() as client:
                await client.read_deployment_by_name(name)
            return
        except Exception:  # not registered yet, server still starting: try again
            await asyncio.sleep(pause_s)
    log.warning("Prefect deployment %s not found at start-up; the first job may be slow", name)
