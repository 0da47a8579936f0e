"""Shoal's schedules as Prefect deployment schedules.

Each Shoal schedule is one schedule of the ``scrape-job`` deployment of its job's priority
(``shoal.settings.deployment_names``: the embedded worker's or the pool's), with parameters
``{"schedule_id": ...}`` and slug ``shoal-<schedule id>``. So Prefect's scheduler makes the runs,
the UI lists them on the deployment and pauses them (the schedule's ``active``), and the flow
run turns itself into the schedule's next job (``shoal.schedules.begin_scheduled_run``).

Why slugs: re-registering a deployment (the embedded worker's ``Runner.aadd_flow`` at every
start, ``prefect deploy``) PATCHes it with ``schedules: []``. Prefect 3.9.1's server keeps the
existing schedules when every one of them has a slug, and otherwise deletes them all and creates
the given ones (none) (``server/api/deployments.py: update_deployment``; measured). A schedule
someone adds in the UI without a slug would make the next start wipe ours; :func:`reconcile`
re-creates them from the store, the source of truth, at every worker start.

Why the runner's ``pause_on_shutdown`` does not stop them for good: it sets the *deployment*
``paused`` when the worker stops (no flow run is scheduled meanwhile) and leaves each schedule's
``active`` as it was; the next ``aadd_flow`` sets ``paused: false`` again (measured). A Shoal
schedule's ``paused`` is the schedule's ``active`` flag only.

Nothing here imports flow code: the API and the worker both call it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.responses import DeploymentResponse as Deployment
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.exceptions import ObjectNotFound

from shoal.errors import Unavailable
from shoal.schedule_times import anchor_of
from shoal.settings import Settings, deployment_names
from shoal.store import ScheduleRow, Store

log = logging.getLogger(__name__)

#: the slug of a Shoal schedule on its deployment is this and the schedule's id
SLUG_PREFIX = "shoal-"


def slug_of(schedule_id: str) -> str:
    return f"{SLUG_PREFIX}{schedule_id}"


def schedule_id_of(slug: str | None) -> str | None:
    """The Shoal schedule a Prefect schedule's slug names, or None for another schedule."""
    if slug and slug.startswith(f"{SLUG_PREFIX}sch_"):
        return slug.removeprefix(SLUG_PREFIX)
    return None


def prefect_schedule(row: ScheduleRow) -> CronSchedule | IntervalSchedule:
    """The Prefect schedule of a Shoal schedule: a cron on the zone's wall clock, or an
    interval counted from the schedule's creation (as ``shoal.schedules.next_runs`` counts)."""
    if row.cron:
        return CronSchedule(cron=row.cron, timezone=row.timezone or "UTC")
    return IntervalSchedule(
        interval=timedelta(seconds=row.interval_s or 60), anchor_date=anchor_of(row), timezone="UTC"
    )


def deployment_of(row: ScheduleRow, settings: Settings) -> str:
    """The deployment the schedule's runs start on: that of its job's priority."""
    return deployment_names(settings)[str((row.job or {}).get("priority") or "normal")]


async def _deployments(client: PrefectClient, settings: Settings) -> dict[str, Deployment]:
    """The deployment set's deployments Prefect has, by full name."""
    found: dict[str, Deployment] = {}
    for name in dict.fromkeys(deployment_names(settings).values()):
        try:
            found[name] = await client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
    return found


@dataclass(frozen=True)
class Found:
    """A Shoal schedule's Prefect schedule: on which deployment, its id, whether active."""

    deployment_id: Any
    deployment_name: str
    prefect_id: str
    active: bool


def _found(deployments: dict[str, Deployment]) -> dict[str, list[Found]]:
    by_schedule: dict[str, list[Found]] = {}
    for name, dep in deployments.items():
        for s in dep.schedules or []:
            sid = schedule_id_of(s.slug)
            if sid is not None:
                by_schedule.setdefault(sid, []).append(Found(dep.id, name, str(s.id), s.active))
    return by_schedule


async def _delete(client: PrefectClient, found: Found) -> None:
    with contextlib.suppress(ObjectNotFound):  # gone already
        await client.delete_deployment_schedule(found.deployment_id, UUID(found.prefect_id))


async def _put(
    client: PrefectClient,
    row: ScheduleRow,
    settings: Settings,
    deployments: dict[str, Deployment],
    found: list[Found],
    *,
    retried: bool = False,
) -> str:
    """Update the schedule's Prefect schedule on its deployment, or create it; delete any on
    other deployments. A create that loses a race with another process updates the winner's."""
    target_name = deployment_of(row, settings)
    target = deployments.get(target_name)
    if target is None:
        raise Unavailable(
            f"deployment {target_name} not found: is a worker serving it? (schedules live on it)"
        )
    mine: Found | None = None
    for f in found:
        if f.deployment_id == target.id and mine is None:
            mine = f
        else:  # on another deployment (its priority changed), or a stray second one
            await _delete(client, f)
    if mine is not None:
        await client.update_deployment_schedule(
            target.id,
            UUID(mine.prefect_id),
            active=not row.paused,
            schedule=prefect_schedule(row),
            parameters={"schedule_id": row.id},
            slug=slug_of(row.id),
        )
        return mine.prefect_id
    try:
        made = await client.create_deployment_schedules(
            target.id,
            [
                DeploymentScheduleCreate(
                    schedule=prefect_schedule(row),
                    active=not row.paused,
                    parameters={"schedule_id": row.id},
                    slug=slug_of(row.id),
                )
            ],
        )
    except httpx.HTTPStatusError as exc:
        # 409: its slug is taken since we read the deployment: another process (the API's
        # create, a worker's or the API's reconcile) made it meanwhile. Make that one right.
        if exc.response.status_code != 409 or retried:
            raise
        fresh = await _deployments(client, settings)
        return await _put(client, row, settings, fresh, _found(fresh).get(row.id, []), retried=True)
    return str(made[0].id)


async def put_schedule(row: ScheduleRow, settings: Settings) -> str:
    """Make the schedule's Prefect schedule what the row says (timing, active, deployment);
    its Prefect id. ``Unavailable`` when its deployment is not registered."""
    async with get_client() as client:
        deployments = await _deployments(client, settings)
        found = _found(deployments).get(row.id, [])
        return await _put(client, row, settings, deployments, found)


async def remove_schedule(schedule_id: str, settings: Settings) -> None:
    """Delete the schedule's Prefect schedule (its future runs go with it; a run already
    started goes on)."""
    async with get_client() as client:
        deployments = await _deployments(client, settings)
        for f in _found(deployments).get(schedule_id, []):
            await _delete(client, f)


async def active_flags(settings: Settings) -> dict[str, bool]:
    """Each Shoal schedule Prefect has and whether it is active (a pause in the UI: False)."""
    async with get_client() as client:
        deployments = await _deployments(client, settings)
    return {sid: all(f.active for f in fs) for sid, fs in _found(deployments).items()}


@dataclass
class Reconciled:
    """What :func:`reconcile` did."""

    created: list[str] = field(default_factory=list)
    paused: dict[str, bool] = field(default_factory=dict)  # schedule id -> paused, as changed
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def reconcile(settings: Settings, store: Store) -> Reconciled:
    """Bring Prefect's schedules to the store's: create each Shoal schedule Prefect lacks (with
    the ``paused`` last seen), take ``paused`` from each one it has (the UI may have changed
    it), and delete Shoal-slugged schedules whose Shoal schedule is gone."""
    done = Reconciled()
    rows = store.all_schedules()
    async with get_client() as client:
        deployments = await _deployments(client, settings)
        found = _found(deployments)
        for row in rows:
            mine = found.pop(row.id, [])
            target = deployment_of(row, settings)
            if mine and all(f.deployment_name == target for f in mine) and len(mine) == 1:
                paused = not mine[0].active
                if paused != bool(row.paused):
                    store.update_schedule(row.id, paused=int(paused))
                    done.paused[row.id] = paused
                continue
            try:
                prefect_id = await _put(client, row, settings, deployments, mine)
            except Exception as exc:  # its deployment is not there yet: the next start tries
                log.warning("could not put schedule %s on Prefect: %s", row.id, exc)
                done.failed.append(row.id)
                continue
            store.update_schedule(row.id, prefect_schedule_id=prefect_id)
            done.created.append(row.id)
        for sid, strays in found.items():
            if store.get_schedule(sid) is not None:  # made since we read the store
                continue
            for f in strays:
                await _delete(client, f)
            done.removed.append(sid)
    return done
