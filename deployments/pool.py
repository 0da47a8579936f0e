"""Set up the Prefect work pool the deployments of ``prefect.yaml`` run on.

``python -m deployments.pool`` (or ``shoal pool setup``) against ``PREFECT_API_URL``: makes the
work pool (``SHOAL_WORK_POOL``, default ``shoal``, type ``process``) and its queues ``high``,
``normal`` and ``low`` at priorities 1, 2 and 3, so a worker takes a ``high`` job before any
``normal`` one. Each queue's concurrency limit is ``SHOAL_QUEUE_LIMIT_<QUEUE>``, the pool's
``SHOAL_POOL_CONCURRENCY_LIMIT`` (unset: no limit). Run it again after changing them: it makes
an existing pool and its queues match the settings (and never touches the pool's base job
template once the pool exists). ``prefect deploy --all`` cannot do this: ``prefect.yaml`` names
a queue but cannot give it a priority or a limit.

The pool's ``default`` queue (Prefect makes one with every pool) stays, after ``low``: nothing
of Shoal's is deployed to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from shoal.settings import DEFAULT_WORK_POOL, PRIORITIES, Settings, get_settings

log = logging.getLogger("shoal.pool")

POOL_TYPE = "process"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    priority: int
    concurrency_limit: int | None


def pool_name(settings: Settings) -> str:
    """The work pool Shoal's pool deployments use (prefect.yaml names ``shoal``)."""
    return settings.work_pool or DEFAULT_WORK_POOL


def queue_specs(settings: Settings) -> list[QueueSpec]:
    """One queue per priority, ``high`` first (priority 1), with its concurrency limit."""
    limits = {
        "high": settings.queue_limit_high,
        "normal": settings.queue_limit_normal,
        "low": settings.queue_limit_low,
    }
    return [QueueSpec(p, i, limits[p]) for i, p in enumerate(PRIORITIES, start=1)]


def _default_base_job_template() -> dict[str, object]:
    # what `prefect work-pool create --type process` uses; a pool made without one has no job
    # variables (env, working_dir, command) that a deployment could set
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


async def _ensure_pool(client: PrefectClient, name: str, limit: int | None) -> str:
    """Create the pool or bring its concurrency limit in line; what was done."""
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=POOL_TYPE,
                    base_job_template=_default_base_job_template(),
                    concurrency_limit=limit,
                    description="Shoal jobs (prefect.yaml); queues high > normal > low",
                )
            )
            return "created"
        except ObjectAlreadyExists:  # created by someone else just now
            pool = await client.read_work_pool(name)
    if pool.type != POOL_TYPE:
        raise SystemExit(
            f"work pool {name!r} exists with type {pool.type!r}, not {POOL_TYPE!r}: "
            "delete it or set SHOAL_WORK_POOL to another name"
        )
    if pool.concurrency_limit != limit:
        # an explicit None clears the limit (the update sends only the fields set)
        await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
        return "updated"
    return "unchanged"


async def _ensure_queue(client: PrefectClient, pool: str, spec: QueueSpec) -> str:
    try:
        queue = await client.read_work_queue_by_name(spec.name, work_pool_name=pool)
    except ObjectNotFound:
        try:
            await client.create_work_queue(
                name=spec.name,
                work_pool_name=pool,
                priority=spec.priority,
                concurrency_limit=spec.concurrency_limit,
                description=f"Shoal jobs of priority {spec.name}",
            )
            return "created"
        except ObjectAlreadyExists:
            queue = await client.read_work_queue_by_name(spec.name, work_pool_name=pool)
    changes: dict[str, object] = {}
    if queue.priority != spec.priority:
        changes["priority"] = spec.priority
    if queue.concurrency_limit != spec.concurrency_limit:
        changes["concurrency_limit"] = spec.concurrency_limit
    if not changes:
        return "unchanged"
    await client.update_work_queue(queue.id, **changes)
    return "updated"


async def setup_pool(settings: Settings) -> dict[str, str]:
    """Make the work pool and its queues match ``settings``; what happened to each, by name.

    Idempotent. Queues are set in priority order: the server keeps priorities unique by moving
    the others down, so setting 1, 2, 3 in turn ends with high, normal, low on top."""
    name = pool_name(settings)
    done: dict[str, str] = {}
    async with get_client() as client:
        done[f"pool {name}"] = await _ensure_pool(client, name, settings.pool_concurrency_limit)
        for spec in queue_specs(settings):
            done[f"queue {spec.name}"] = await _ensure_queue(client, name, spec)
    return done


def _describe(settings: Settings) -> str:
    def limit(n: int | None) -> str:
        return "no limit" if n is None else f"limit {n}"

    lines = [
        f"work pool {pool_name(settings)} ({POOL_TYPE}, {limit(settings.pool_concurrency_limit)})"
    ]
    lines += [
        f"  queue {q.name}: priority {q.priority}, {limit(q.concurrency_limit)}"
        for q in queue_specs(settings)
    ]
    return "\n".join(lines)


def main() -> None:
    settings = get_settings()
    done = asyncio.run(setup_pool(settings))
    for what, outcome in done.items():
        print(f"{what}: {outcome}")
    print(_describe(settings))
    if pool_name(settings) != DEFAULT_WORK_POOL:
        print(
            f"note: prefect.yaml deploys to the work pool {DEFAULT_WORK_POOL!r}; change its "
            f"work_pool names to {pool_name(settings)!r} before prefect deploy --all"
        )


if __name__ == "__main__":
    main()
