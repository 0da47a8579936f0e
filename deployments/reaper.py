"""The reaper: every job reaches a final status, also when a worker dies under it.

It compares each unfinished job with its flow run. A run that crashed (or, at worker start, one
still marked running by a worker that is gone) is resumed as a new flow run of the same job —
finished chunks are cached by (job, chunk) and are not fetched again — up to
``SHOAL_MAX_RESUMES`` times, then the job fails with a clear ``error``. A run cancelled in the
Prefect UI whose hook did not finish the job is finished here as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from deployments.launch import start_flow_run
from shoal.finalize import fail_job, finalize_job
from shoal.settings import Settings
from shoal.store import JobRow, aware, get_store, utcnow

log = logging.getLogger("shoal.reaper")

_ORPHANED_AT_START = {StateType.RUNNING, StateType.PENDING, StateType.CANCELLING}


async def _resume(row: JobRow, settings: Settings, why: str) -> None:
    store = get_store(settings)
    if row.resume_count >= settings.max_resumes:
        await asyncio.to_thread(
            fail_job, row.id, settings, f"{why}; gave up after {row.resume_count} resumes"
        )
        log.warning("job %s failed: %s", row.id, why)
        return
    n = row.resume_count + 1
    flow_run_id = await start_flow_run(row, settings, resume=n)
    await asyncio.to_thread(store.update_job, row.id, flow_run_id=flow_run_id, resume_count=n)
    log.warning("job %s resumed as flow run %s (%s)", row.id, flow_run_id, why)


async def reap(settings: Settings, *, at_start: bool) -> None:
    """One pass over the unfinished jobs (see the module docstring)."""
    store = get_store(settings)
    rows = await asyncio.to_thread(store.nonfinal_jobs)
    if not rows:
        return
    async with get_client() as client:
        for row in rows:
            try:
                if row.flow_run_id is None:
                    # the API died between insert and flow-run creation
                    if utcnow() - (aware(row.created_at) or utcnow()) > timedelta(seconds=60):
                        await _resume(row, settings, "the job's flow run was never created")
                    continue
                fr = await client.read_flow_run(row.flow_run_id)
                state = fr.state
                kind = state.type if state else None
                if at_start and kind in _ORPHANED_AT_START:
                    await client.set_flow_run_state(
                        fr.id, Crashed(message="the worker running it stopped"), force=True
                    )
                    await _resume(row, settings, "the worker running it stopped")
                elif kind == StateType.CRASHED:
                    await _resume(row, settings, f"its flow run crashed: {state.message}")
                elif kind == StateType.CANCELLED:
                    await asyncio.to_thread(
                        finalize_job,
                        row.id,
                        settings,
                        cancelled=True,
                        error="cancelled from the Prefect UI",
                    )
                elif kind in (StateType.FAILED, StateType.COMPLETED):
                    await asyncio.to_thread(
                        fail_job,
                        row.id,
                        settings,
                        f"the flow run ended {state.name} without finishing the job: "
                        f"{state.message}",
                    )
            except Exception:  # one bad job must not stop the reaper
                log.exception("reaper: could not check job %s", row.id)


async def reap_forever(settings: Settings, interval_s: float = 15.0) -> None:
    await reap(settings, at_start=True)
    while True:
        await asyncio.sleep(interval_s)
        await reap(settings, at_start=False)
