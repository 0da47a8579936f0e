"""``/v1/schedules``: create, list, read, change, delete and run now.

Each schedule is a Prefect deployment schedule (``api.prefect_access`` writes it); its
``paused`` is read back from Prefect on every read, so a pause in the Prefect UI shows here."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse

from api import prefect_access
from api.deps import CurrentAccount, SettingsDep, StorageDep, StoreDep
from api.errors import answers
from api.prefect_access import scheduler_errors
from deployments.launch import start_flow_run
from shoal import jobs, schedules
from shoal.contract import (
    ID_PATTERN,
    MAX_OFFSET,
    JobPublic,
    ScheduleCreate,
    ScheduleList,
    SchedulePatch,
    SchedulePublic,
    is_id,
)
from shoal.errors import NotFound
from shoal.settings import Settings
from shoal.store import ScheduleRow, Store

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

ScheduleId = Annotated[
    str,
    Path(description="A schedule's id (`sch_…`).", json_schema_extra={"pattern": ID_PATTERN}),
]
#: columns whose change the Prefect schedule must follow
_PREFECT_COLUMNS = frozenset({"cron", "timezone", "interval_s", "paused", "job"})


def own_schedule(store: Store, schedule_id: str, account_id: str) -> ScheduleRow:
    """The account's schedule; ``NotFound`` for an unknown id and another account's alike."""
    row = store.get_schedule(schedule_id, account_id) if is_id(schedule_id) else None
    if row is None:
        raise NotFound(f"no schedule {schedule_id}" if is_id(schedule_id) else "no schedule")
    return row


async def _with_prefect_pause(
    rows: list[ScheduleRow], settings: Settings, store: Store
) -> list[ScheduleRow]:
    """The rows with ``paused`` as Prefect says now (kept in the store when it changed)."""
    pauses = await prefect_access.schedule_pauses(settings)
    if pauses is None:
        return rows
    out = []
    for row in rows:
        paused = pauses.get(row.id)
        if paused is not None and paused != bool(row.paused):
            new = await asyncio.to_thread(store.update_schedule, row.id, paused=int(paused))
            row = new if new is not None else row
        out.append(row)
    return out


@router.post(
    "",
    status_code=201,
    response_model=SchedulePublic,
    summary="Create a schedule",
    responses={409: {"description": "The account has a schedule of that name"}, **answers(503)},
)
async def create_schedule(
    body: ScheduleCreate, account: CurrentAccount, settings: SettingsDep, store: StoreDep
) -> JSONResponse:
    """Check it, record it and give it its Prefect schedule; ``next_runs`` are in UTC."""
    row = await asyncio.to_thread(schedules.new_schedule, body, settings, store, account)
    try:
        prefect_id = await prefect_access.put_schedule(row, settings)
    except BaseException:
        await asyncio.to_thread(store.delete_schedule, row.id)
        raise
    made = await asyncio.to_thread(store.update_schedule, row.id, prefect_schedule_id=prefect_id)
    public = schedules.to_public(made if made is not None else row)
    return JSONResponse(public.model_dump(mode="json"), status_code=201)


@router.get("", response_model=ScheduleList, summary="List schedules, newest first")
async def list_schedules(
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ScheduleList:
    rows, total = await asyncio.to_thread(store.list_schedules, account.id, limit, offset)
    rows = await _with_prefect_pause(rows, settings, store)
    return ScheduleList(
        schedules=[schedules.to_public(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="A schedule, its next runs and counts",
    responses=answers(404),
)
async def get_schedule(
    schedule_id: ScheduleId, account: CurrentAccount, settings: SettingsDep, store: StoreDep
) -> SchedulePublic:
    row = await asyncio.to_thread(own_schedule, store, schedule_id, account.id)
    (row,) = await _with_prefect_pause([row], settings, store)
    return schedules.to_public(row)


@router.patch(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="Change a schedule (any top-level field; `paused` pauses)",
    responses={409: {"description": "Another schedule has that name"}, **answers(404, 503)},
)
async def patch_schedule(
    schedule_id: ScheduleId,
    body: SchedulePatch,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
) -> SchedulePublic:
    """The whole schedule the change makes is checked as a create is. A run already started
    goes on as it was."""
    row = await asyncio.to_thread(own_schedule, store, schedule_id, account.id)
    (row,) = await _with_prefect_pause([row], settings, store)  # a UI pause is kept
    values = await asyncio.to_thread(schedules.patched, row, body, settings, store, account)
    if not values:
        return schedules.to_public(row)
    before = {k: getattr(row, k) for k in values}
    new = await asyncio.to_thread(store.update_schedule, schedule_id, **values)
    if new is None:
        raise NotFound(f"no schedule {schedule_id}")
    if _PREFECT_COLUMNS & values.keys():
        try:
            await prefect_access.put_schedule(new, settings)
        except BaseException:
            await asyncio.to_thread(store.update_schedule, schedule_id, **before)
            raise
    return schedules.to_public(new)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule (a run already started goes on)",
    responses=answers(404, 503),
)
async def delete_schedule(
    schedule_id: ScheduleId, account: CurrentAccount, settings: SettingsDep, store: StoreDep
) -> Response:
    await asyncio.to_thread(own_schedule, store, schedule_id, account.id)
    await prefect_access.remove_schedule(schedule_id, settings)
    await asyncio.to_thread(store.delete_schedule, schedule_id)
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/run",
    status_code=202,
    response_model=JobPublic,
    summary="Run the schedule now",
    responses={
        409: {"description": "A run of the schedule is still going"},
        **answers(404, 429, 503),
    },
)
async def run_schedule(
    schedule_id: ScheduleId,
    account: CurrentAccount,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
) -> JSONResponse:
    """The schedule's next run, started as ``POST /v1/jobs`` starts a job: a job with
    ``schedule_id`` and ``run_number``, compared with the previous run when it ends."""
    await asyncio.to_thread(own_schedule, store, schedule_id, account.id)
    job = await schedules.run_now(
        schedule_id,
        account,
        settings=settings,
        store=store,
        storage=storage,
        start=scheduler_errors(start_flow_run),
    )
    row = await asyncio.to_thread(store.get_job, job.id)
    public = jobs.to_public(row or job, store, settings)
    return JSONResponse(public.model_dump(mode="json"), status_code=202)
