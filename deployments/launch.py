"""Starting a job's flow run on its priority's deployment, by name: the API for a new job, the
reaper for a job whose run crashed. Which set of deployments (the embedded worker's or the work
pool's, ``SHOAL_WORK_POOL``) is ``shoal.settings.deployment_names``. Nothing here imports flow
code."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx
from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment

from shoal.settings import Settings, deployment_names
from shoal.store import JobRow

log = logging.getLogger(__name__)


#: answers of a Prefect server that is up but cannot take the request just now
RETRY_STATUSES = frozenset({408, 429, 502, 503})
#: how long ``start_flow_run`` keeps trying while the server answers one of them
RETRY_BUDGET_S = 10.0
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.05, 1.0


class PrefectBusy(Exception):
    """The Prefect server answered one of ``RETRY_STATUSES``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"Prefect answered {status}")
        self.status = status


async def _raise_when_busy(response: httpx.Response) -> None:
    # an httpx response hook runs inside the client's send, before Prefect's retry loop sees
    # the answer; that loop sleeps 2 s on a 503 even with its retries turned off
    if response.status_code in RETRY_STATUSES:
        await response.aclose()
        raise PrefectBusy(response.status_code)


async def start_flow_run(
    job: JobRow, settings: Settings, *, resume: int = 0, previous: str | None = None
) -> str:
    """Create the job's flow run on its priority's deployment; its id.

    Named after the job (``<job id>-resume-<n>`` for the reaper's ``resume``-th new run of a job
    whose run crashed; `` · <job name>`` follows when the job has one), tagged with account,
    priority and ``shoal`` (and ``resumed``).

    Prefect's server on SQLite now and then answers ``503`` to creating a flow run: it reads the
    deployment and then inserts in one deferred transaction, and SQLite refuses that write at
    once when the worker's poll wrote in between ("database is locked"). Prefect's client waits
    2 s, then 4 s, before trying again (measured: 2 of 10 one-URL POSTs took 2.1-2.4 s, one POST
    7 s). Here such an answer raises at once (``PrefectBusy``) and this function tries again
    after 50 ms, doubling to at most 1 s, for up to ``RETRY_BUDGET_S``. The job id is the flow
    run's idempotency key (with the resume number), so a request sent again never makes a second
    flow run. Other errors (no such deployment, server unreachable) raise at once.

    A resumed run gets ``resume`` and the ``previous`` flow run's id as parameters: the flow
    claims the job as that attempt (a later attempt always wins) and says on its own run page
    which run it took over from."""
    run_name = f"{job.id}-resume-{resume}" if resume else job.id
    tags = [f"account:{job.account_id}", f"priority:{job.priority}", "shoal"]
    if resume:
        tags.append("resumed")
    deadline = time.monotonic() + RETRY_BUDGET_S
    pause = _FIRST_PAUSE_S
    async with get_client(httpx_settings=_HTTPX_SETTINGS) as client:
        while True:
            try:
                flow_run = await arun_deployment(
                    name=deployment_names(settings)[job.priority],
                    client=client,
                    parameters=(
                        {"job_id": job.id, "resume": resume, "previous_flow_run": previous}
                        if resume
                        else {"job_id": job.id}
                    ),
                    timeout=0,
                    # the job's own name beside its id, as an operator reads the runs list
                    flow_run_name=f"{run_name} · {job.name}" if job.name else run_name,
                    tags=tags,
                    idempotency_key=run_name,
                    as_subflow=False,
                )
                return str(flow_run.id)
            except PrefectBusy as exc:
                wait = random.uniform(pause / 2, pause)
                if time.monotonic() + wait > deadline:
                    raise
                log.warning(
                    "Prefect answered %d to starting job %s; trying again in %.2f s",
                    exc.status,
                    job.id,
                    wait,
                )
            await asyncio.sleep(wait)
            pause = min(pause * 2, _MAX_PAUSE_S)


_HTTPX_SETTINGS = {"event_hooks": {"response": [_raise_when_busy]}}
