"""The API's side of Prefect: a warm client at start-up, a bounded, per-account fair number of
flow-run starts in flight (``PrefectGate``), and what a failure to start a job's flow run tells
the caller; schedules' Prefect side (``deployments.prefect_schedules``) with the same care. Jobs'
flow runs are started by ``deployments.launch.start_flow_run``; the API never imports flow
code."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from deployments import prefect_schedules
from deployments.launch import RETRY_BUDGET_S, PrefectBusy
from shoal.errors import FieldError, InputError, SchedulerBusy, Unavailable
from shoal.settings import Settings, deployment_names
from shoal.store import JobRow, ScheduleRow, get_store
from shoal.submit import StartFlowRun

log = logging.getLogger(__name__)
T = TypeVar("T")


async def warm_up(settings: Settings, attempts: int = 60, pause_s: float = 1.0) -> None:
    """Make the first job's POST as quick as the next ones: open the Prefect client and read the
    deployment once at start-up (measured: the first ``run_deployment`` took 2.2 s, later ones
    0.05 s), then give Shoal schedules Prefect lacks their Prefect schedules. Retries while the
    worker has not registered the deployments yet; never raises.
    Skipped without ``PREFECT_API_URL``: a client would start a throwaway local server."""
    if not os.environ.get("PREFECT_API_URL"):
        return
    name = deployment_names(settings)["normal"]
    for _ in range(attempts):
        try:
            async with get_client() as client:
                await client.read_deployment_by_name(name)
            break
        except Exception:  # not registered yet, server still starting: try again
            await asyncio.sleep(pause_s)
    else:
        log.warning("Prefect deployment %s not found at start-up; the first job may be slow", name)
        return
    try:  # pool workers do not reconcile (plain `prefect worker`): the API does, once
        await prefect_schedules.reconcile(settings, get_store(settings))
    except Exception as exc:
        log.warning("could not reconcile schedules with Prefect: %s", exc)


def deployment_missing(names: list[str]) -> str:
    """Why no job can start on ``names``: Prefect has no such deployment (yet)."""
    if len(names) == 1:
        return f"deployment {names[0]} not found: is a worker serving it?"
    return f"deployments {', '.join(names)} not found: is a worker serving them?"


def prefect_unreachable(url: str, exc: BaseException) -> str:
    return f"the scheduler (Prefect) at {url} is unreachable ({type(exc).__name__}: {exc})"


class PrefectGate:
    """Bounds the API's calls starting flow runs: ``calls`` in flight at once, of which one
    account holds at most half (at least 1). An account's burst waits behind its own earlier
    calls, not in front of other accounts', and Prefect (on SQLite: one writer) sees a bounded
    number of writes from the API whatever the callers do."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.per_account = max(1, calls // 2)
        self._all = asyncio.Semaphore(calls)
        self._accounts: dict[str, tuple[asyncio.Semaphore, int]] = {}  # id -> (slots, users)

    @asynccontextmanager
    async def slot(self, account_id: str) -> AsyncIterator[None]:
        own, users = self._accounts.get(account_id, (None, 0))
        if own is None:
            own = asyncio.Semaphore(self.per_account)
        self._accounts[account_id] = (own, users + 1)
        try:
            async with own, self._all:
                yield
        finally:
            own, users = self._accounts[account_id]
            if users == 1:
                del self._accounts[account_id]  # only accounts with calls under way are kept
            else:
                self._accounts[account_id] = (own, users - 1)


#: one gate per event loop (asyncio primitives belong to the loop they first wait on)
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PrefectGate] = (
    weakref.WeakKeyDictionary()
)


def prefect_gate(settings: Settings) -> PrefectGate:
    """The running loop's gate, sized by ``SHOAL_PREFECT_CALLS``."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None or gate.calls != settings.prefect_calls:
        gate = _gates[loop] = PrefectGate(settings.prefect_calls)
    return gate


#: The longest a request waits for its job's flow run to be created, the gate's queue included:
#: past it (or past ``start_flow_run``'s own retries of a busy Prefect) the job stays queued and
#: the resume service starts it. Measured on 2 cores, one account retrying 35 times a second
#: while another created jobs: Prefect on SQLite was busy for over 30 s at a time, and jobs of
#: both accounts failed with "Prefect answered 503" after the 10 s retry budget.
START_WAIT_S = RETRY_BUDGET_S + 2.0


def scheduler_errors(start: StartFlowRun) -> StartFlowRun:
    """``start`` through the loop's ``PrefectGate``, within ``START_WAIT_S``, its failures saying
    their real cause: ``SchedulerBusy`` for a Prefect that is up but busy (the job stays queued),
    ``Unavailable`` for a deployment Prefect does not have or a Prefect that cannot be reached.
    Others pass as they are."""

    @wraps(start)
    async def _start(job: JobRow, settings: Settings) -> str:
        try:
            async with asyncio.timeout(START_WAIT_S):
                async with prefect_gate(settings).slot(job.account_id):
                    return await start(job, settings)
        except (PrefectBusy, TimeoutError) as exc:
            raise SchedulerBusy(
                f"the scheduler (Prefect) is busy ({exc or 'no answer'} for "
                f"{START_WAIT_S:g} s): the job stays queued and starts within a minute"
            ) from exc
        except ObjectNotFound as exc:
            name = deployment_names(settings)[job.priority]
            raise Unavailable(deployment_missing([name])) from exc
        except (httpx.TransportError, OSError) as exc:
            url = get_current_settings().api.url or "(PREFECT_API_URL not set)"
            raise Unavailable(prefect_unreachable(url, exc)) from exc

    return _start


# --- schedules (deployments/prefect_schedules.py), with failures saying their cause -------------


async def _schedule_call(settings: Settings, call: Coroutine[Any, Any, T]) -> T:
    if not get_current_settings().api.url:  # a client would start a throwaway local server
        call.close()
        raise Unavailable("the scheduler (Prefect) is not configured: PREFECT_API_URL is not set")
    try:
        async with asyncio.timeout(START_WAIT_S):
            return await call
    except (PrefectBusy, TimeoutError) as exc:
        raise Unavailable(
            f"the scheduler (Prefect) is busy ({exc or 'no answer'}); try again"
        ) from exc
    except (httpx.TransportError, OSError) as exc:
        url = get_current_settings().api.url or "(PREFECT_API_URL not set)"
        raise Unavailable(prefect_unreachable(url, exc)) from exc
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 422:  # a schedule Prefect cannot read
            raise InputError(
                "Prefect refused the schedule",
                errors=[FieldError("cron", exc.response.text[:300])],
            ) from exc
        raise Unavailable(f"the scheduler (Prefect) answered {exc.response.status_code}") from exc


async def put_schedule(row: ScheduleRow, settings: Settings) -> str:
    """Create or update the schedule's Prefect schedule; its Prefect id (``Unavailable`` when
    Prefect or the deployment is not there)."""
    return await _schedule_call(settings, prefect_schedules.put_schedule(row, settings))


async def remove_schedule(schedule_id: str, settings: Settings) -> None:
    await _schedule_call(settings, prefect_schedules.remove_schedule(schedule_id, settings))


async def schedule_pauses(settings: Settings) -> dict[str, bool] | None:
    """Shoal schedule id -> paused, as Prefect's schedules say now (a pause in its UI), or None
    when Prefect cannot be asked (the store's last reading stands)."""
    if not get_current_settings().api.url:  # a client would start a throwaway server
        return None
    try:
        flags = await _schedule_call(settings, prefect_schedules.active_flags(settings))
    except Unavailable as exc:
        log.warning("could not read schedules from Prefect: %s", exc)
        return None
    return {sid: not active for sid, active in flags.items()}
