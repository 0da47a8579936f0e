"""The resume service (``deployments/reaper.py``) and the zombie automation
(``deployments/liveness.py``) against the real Prefect test server.

A job is resumed only when Prefect says its run is ``Crashed``, exactly once however many
resumers look at it; a ``Running`` run is never touched; the automation crashes a run whose
heartbeats stop, and only that run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from prefect.events.clients import get_events_client
from prefect.states import Cancelled, Cancelling, Crashed, Pending, Running

from deployments import liveness, reaper
from deployments.launch import start_flow_run
from shoal import jobs
from shoal.settings import Settings, deployment_names, get_settings
from shoal.store import JobRow, get_store

PREFIX = "resume-test"
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    settings = get_settings().model_copy(update={"deployment_prefix": PREFIX})
    flow_name, name = deployment_names(settings)["normal"].split("/")
    async with get_client() as client:  # a deployment without a work pool: runs stay Scheduled
        flow_id = await client.create_flow_from_name(flow_name)
        await client.create_deployment(flow_id=flow_id, name=name)
    yield settings


async def _running_job(settings: Settings) -> tuple[JobRow, str]:
    """A job whose first flow run has started (its row and its flow run say so)."""
    spec = {"concurrency": 1, "defaults": {}, "output": {}, "fields": {}}
    row = get_store(settings).insert_job(jobs.job_row("acct_resume", None, "normal", spec, 1))
    run_id = await start_flow_run(row, settings)
    async with get_client() as client:
        await client.set_flow_run_state(run_id, Running(), force=True)
    return get_store(settings).mark_running(row.id, run_id), run_id


async def _set(run_id: str, state: Any) -> None:
    async with get_client() as client:
        await client.set_flow_run_state(run_id, state, force=True)


async def _runs_named(name: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
            sort=FlowRunSort.ID_DESC,
            limit=10,
        )


@task(name="chunk-of-a-dead-run")
def _chunk() -> None:
    """Stands for a scrape_chunk task run left Running by a killed flow process."""


async def test_a_crashed_run_is_resumed_once_by_many_resumers(settings: Settings) -> None:
    row, first = await _running_job(settings)
    async with get_client() as client:
        chunk = await client.create_task_run(_chunk, UUID(first), "0", state=Running())
    await _set(first, Crashed(message="its worker died"))
    await asyncio.gather(*(reaper.reap(settings) for _ in range(4)))  # four services at once
    runs = await _runs_named(f"{row.id}-resume-1")
    assert len(runs) == 1
    resumed = runs[0]
    assert resumed.parameters == {"job_id": row.id, "resume": 1, "previous_flow_run": first}
    assert get_store(settings).run_owner(row.id) == (str(resumed.id), 1)
    await reaper.reap(settings)  # the new run is Scheduled: nothing more to do
    assert await _runs_named(f"{row.id}-resume-2") == []
    async with get_client() as client:  # the dead run's chunk does not read Running forever
        left = await client.read_task_run(chunk.id)
    assert left.state is not None and left.state.type == StateType.CRASHED


async def test_a_running_run_is_never_touched(settings: Settings) -> None:
    row, first = await _running_job(settings)
    await reaper.reap(settings)
    async with get_client() as client:
        assert (await client.read_flow_run(first)).state.type == StateType.RUNNING
    assert get_store(settings).run_owner(row.id) == (first, 0)
    assert await _runs_named(f"{row.id}-resume-1") == []


async def test_a_cancelled_run_ends_its_job_cancelled(settings: Settings) -> None:
    row, first = await _running_job(settings)
    await _set(first, Cancelled(message="from the UI"))
    await reaper.reap(settings)
    job = get_store(settings).get_job(row.id)
    assert job is not None and job.status == "cancelled"
    assert job.error == "cancelled from the Prefect UI"


async def test_a_job_that_crashed_too_often_fails(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_resumes": 1})
    row, first = await _running_job(settings)
    await _set(first, Crashed())
    await reaper.reap(settings)
    owner, attempt = get_store(settings).run_owner(row.id)
    assert attempt == 1
    await _set(owner or "", Crashed(message="again"))
    await reaper.reap(settings)
    job = get_store(settings).get_job(row.id)
    assert job is not None and job.status == "failed"
    assert "gave up after 1 resumes" in (job.error or "")


async def _as_stored(automation_id: UUID) -> dict[str, Any]:
    """The automation as the server keeps it (the client's model leaves out its trigger's id,
    which keys the windows it watches)."""
    async with get_client() as client:
        answer = await client._client.get(f"/automations/{automation_id}")
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


async def test_the_automation_is_kept_once(settings: Settings) -> None:
    await asyncio.gather(*(liveness.ensure_zombie_automation(settings) for _ in range(3)))
    async with get_client() as client:
        found = await client.read_automations_by_name(liveness.ZOMBIE_AUTOMATION)
    assert len(found) == 1
    first = found[0]
    assert first.trigger.posture == "Proactive"
    assert first.trigger.within.total_seconds() == settings.zombie_after_s
    # a service started again leaves it alone: replacing the trigger would forget the runs
    # it watches (Prefect keys their windows by the trigger's id)
    before = await _as_stored(first.id)
    await liveness.ensure_zombie_automation(settings)
    async with get_client() as client:
        again = await client.read_automations_by_name(liveness.ZOMBIE_AUTOMATION)
    assert [a.id for a in again] == [first.id]
    after = await _as_stored(first.id)
    assert (after["updated"], after["trigger"]["id"]) == (
        before["updated"],
        before["trigger"]["id"],
    )
    # a changed window is applied
    longer = settings.model_copy(update={"zombie_after_s": settings.zombie_after_s + 30})
    await liveness.ensure_zombie_automation(longer)
    async with get_client() as client:
        (changed,) = await client.read_automations_by_name(liveness.ZOMBIE_AUTOMATION)
    assert changed.trigger.within.total_seconds() == longer.zombie_after_s
    assert changed.id == first.id
    await liveness.ensure_zombie_automation(settings)


async def _heartbeat(run_id: str, tags: list[str]) -> None:
    """The event a flow run's engine sends (``FlowRunEngine._emit_flow_run_heartbeat``)."""
    emit_event(
        event="prefect.flow-run.heartbeat",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        related=[
            {"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
            for t in tags
        ],
    )


async def test_the_automation_crashes_a_silent_run_and_only_it(settings: Settings) -> None:
    # the shipped window is a minute; the same automation with Prefect's least (10 s) here
    quick = settings.model_copy(update={"zombie_after_s": 10})
    async with get_client() as client:
        for old in await client.read_automations_by_name(liveness.ZOMBIE_AUTOMATION):
            await client.delete_automation(old.id)
        await client.create_automation(liveness.zombie_automation(quick))
    try:
        _, silent = await _running_job(settings)
        _, beating = await _running_job(settings)
        _, other = await _running_job(settings)  # an operator's flow, not tagged shoal
        async with get_events_client() as events:
            del events  # opens the events websocket before the first heartbeat
        for run_id, tags in ((silent, ["shoal"]), (beating, ["shoal"]), (other, ["etl"])):
            await _heartbeat(run_id, tags)
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            await _heartbeat(beating, ["shoal"])
            async with get_client() as client:
                state = (await client.read_flow_run(silent)).state
            if state.type == StateType.CRASHED:
                break
            await asyncio.sleep(1)  # the heartbeat interval of `beating`, not a wait for a result
        assert state is not None and state.type == StateType.CRASHED, state
        assert "no heartbeat" in (state.message or "")
        async with get_client() as client:
            assert (await client.read_flow_run(beating)).state.type == StateType.RUNNING
            assert (await client.read_flow_run(other)).state.type == StateType.RUNNING
    finally:
        await liveness.ensure_zombie_automation(settings)  # the shipped one again


async def test_a_run_left_pending_by_a_dead_worker_is_resumed(settings: Settings) -> None:
    """A worker that took a run and died before the flow's engine started leaves it ``Pending``
    without a heartbeat, which the automation cannot see."""
    row, first = await _running_job(settings)
    await _set(first, Pending())
    await reaper.reap(settings)  # just now: a live worker starts its runs within seconds
    assert await _runs_named(f"{row.id}-resume-1") == []
    stale = settings.model_copy(update={"zombie_after_s": 0})  # "over twice the window"
    await reaper.reap(stale)
    async with get_client() as client:
        left = (await client.read_flow_run(first)).state
    assert left is not None and left.type == StateType.CRASHED
    assert "never started it" in (left.message or "")
    assert len(await _runs_named(f"{row.id}-resume-1")) == 1


async def test_a_run_that_crashed_while_cancelling_ends_its_job_cancelled(
    settings: Settings,
) -> None:
    """A UI cancel kills the run's process; Prefect may record that as Crashed. It is a cancel:
    the job ends cancelled, and is not resumed."""
    row, first = await _running_job(settings)
    await _set(first, Cancelling())
    await _set(first, Crashed(message="process exited with -15"))
    await reaper.reap(settings)
    job = get_store(settings).get_job(row.id)
    assert job is not None and job.status == "cancelled"
    assert await _runs_named(f"{row.id}-resume-1") == []
