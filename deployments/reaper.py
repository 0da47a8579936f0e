"""The resume service's pass: every job reaches a final status, whichever worker or machine ran it.

It compares each unfinished job with the flow run that owns it and acts only on what Prefect
says about that run; it never guesses from its own start or from which worker it runs beside:

- ``Crashed`` (the runner saw its process die, or the zombie automation of
  ``deployments/liveness.py`` saw its heartbeats stop): the job is resumed as a new flow run of
  the same job. Finished chunks are cached by (job, chunk) and the rows a chunk persisted are
  kept, so only what was in flight is fetched again. Up to ``SHOAL_MAX_RESUMES`` times, then the
  job fails with a clear ``error``.
- ``Crashed`` after ``Cancelling`` (a UI cancel whose killed process was recorded as crashed),
  and ``Cancelled`` whose hook did not finish the job (a cancel from the Prefect UI whose process
  was killed first): the job ends ``cancelled`` with every row kept.
- ``Failed``/``Completed`` without a final job: the job fails, saying so.
- ``Pending`` for over twice ``SHOAL_ZOMBIE_AFTER_S``: its worker took it and died before the
  flow's engine started (no heartbeat will ever come): set ``Crashed`` and resumed as above.
- ``Running``, ``Scheduled``, ``Cancelling``, a fresh ``Pending``: left alone. A healthy run on
  another worker keeps sending heartbeats, so nothing here or in Prefect touches it.

Exactly once, with any number of resumers: the new run's idempotency key is
``<job>-resume-<n>`` (Prefect makes one flow run per key, so two resumers that read the same
row create the same run), and ``Store.claim_resume`` records it with a compare-and-set on the
job's resume count. A pass that died between the two is completed by the next one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import TaskRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from deployments.launch import start_flow_run
from shoal.finalize import fail_job, finalize_job
from shoal.settings import Settings
from shoal.store import JobRow, aware, get_store, utcnow

log = logging.getLogger("shoal.reaper")

_UNFINISHED = (StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED)
#: a job whose flow run was never recorded this long after its insert lost its API request
_UNLAUNCHED_AFTER = timedelta(seconds=60)


async def _resume(row: JobRow, settings: Settings, why: str) -> str | None:
    """Start the job's next run (or fail it past ``max_resumes``); the new flow run's id."""
    store = get_store(settings)
    done = row.resume_count or 0
    if done >= settings.max_resumes:
        await asyncio.to_thread(fail_job, row.id, settings, f"{why}; gave up after {done} resumes")
        log.warning("job %s failed: %s; gave up after %d resumes", row.id, why, done)
        return None
    n = done + 1
    flow_run_id = await start_flow_run(row, settings, resume=n, previous=row.flow_run_id)
    if await asyncio.to_thread(store.claim_resume, row.id, n, flow_run_id):
        log.warning("job %s resumed as flow run %s (%s)", row.id, flow_run_id, why)
    return flow_run_id


async def reap(settings: Settings) -> None:
    """One pass over the unfinished jobs (see the module docstring)."""
    store = get_store(settings)
    rows = await asyncio.to_thread(store.nonfinal_jobs)
    if not rows:
        return
    async with get_client() as client:
        for row in rows:
            try:
                await _check(client, row, settings)
            except Exception:  # one bad job must not stop the pass
                log.exception("resume service: could not check job %s", row.id)


async def _close_task_runs(client: Any, flow_run_id: str, why: str) -> int:
    """Set the unfinished task runs of a dead flow run ``Crashed``: its process is gone, so
    nothing else ever will, and the run page would show its chunks ``Running`` forever."""
    closed = 0
    while True:  # 200 at a time (the server's most); a closed one leaves the filter
        left = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(_UNFINISHED)))
            ),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
        for task_run in left:
            await client.set_task_run_state(
                task_run.id, Crashed(message=f"its flow run died: {why}"), force=True
            )
        closed += len(left)
        if len(left) < 200:
            return closed


async def _check(client: Any, row: JobRow, settings: Settings) -> None:
    if row.flow_run_id is None:
        # the API died between inserting the job and creating its flow run
        if utcnow() - (aware(row.created_at) or utcnow()) > _UNLAUNCHED_AFTER:
            await _resume(row, settings, "the job's flow run was never created")
        return
    try:
        fr = await client.read_flow_run(row.flow_run_id)  # type: ignore[attr-defined]
    except ObjectNotFound:
        await _resume(row, settings, f"its flow run {row.flow_run_id} was deleted from Prefect")
        return
    state = fr.state
    kind = state.type if state else None
    dead = None  # why its process is gone, when it is
    if kind == StateType.PENDING and _older_than(state, _pending_limit(settings)):
        # a worker took the run and died before its engine started: no heartbeat will ever
        # come, so the automation cannot see it (Pending lasts 1-3 s on a live worker)
        dead = f"Pending for over {_pending_limit(settings):.0f} s: its worker never started it"
        await client.set_flow_run_state(fr.id, Crashed(message=dead), force=True)
    elif kind == StateType.CRASHED:
        dead = state.message or "crashed"
    if dead is not None:
        await _close_task_runs(client, row.flow_run_id, dead)
        if await _was_cancelling(client, fr.id):
            # cancelled from the UI, and its process reported dead before the cancel landed
            # (Prefect's runner may record the killed process as Crashed): a cancel
            await _end_cancelled(row, settings)
        else:
            await _resume(row, settings, f"its flow run {fr.name} died: {dead}")
    elif kind == StateType.CANCELLED:
        await _end_cancelled(row, settings)
    elif kind in (StateType.FAILED, StateType.COMPLETED):
        await asyncio.to_thread(
            fail_job,
            row.id,
            settings,
            f"the flow run ended {state.name} without finishing the job: {state.message}",
        )


async def _end_cancelled(row: JobRow, settings: Settings) -> None:
    await asyncio.to_thread(
        finalize_job, row.id, settings, cancelled=True, error="cancelled from the Prefect UI"
    )


async def _was_cancelling(client: Any, flow_run_id: Any) -> bool:
    """Whether the run was asked to cancel (``Cancelling``) before it ended."""
    states = await client.read_flow_run_states(flow_run_id)
    return any(s.type == StateType.CANCELLING for s in states)


def _pending_limit(settings: Settings) -> float:
    return 2.0 * settings.zombie_after_s


def _older_than(state: Any, seconds: float) -> bool:
    since = aware(state.timestamp) if state is not None else None
    return since is not None and (utcnow() - since).total_seconds() > seconds


async def reap_forever(settings: Settings) -> None:
    """A pass every ``SHOAL_RESUME_POLL_S`` until cancelled."""
    while True:
        try:
            await reap(settings)
        except Exception:  # Prefect or the store away: try again at the next pass
            log.exception("resume service: pass failed")
        await asyncio.sleep(settings.resume_poll_s)
