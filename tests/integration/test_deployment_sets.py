"""The embedded worker's deployments and the work pool's share one Prefect server: distinct
names, the API starts the set the operator configured (``SHOAL_WORK_POOL``), and stopping the
embedded worker pauses only its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import DeploymentStatus
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from deployments.launch import start_flow_run
from deployments.pool import setup_pool
from shoal import jobs
from shoal.settings import (
    EMBEDDED_MAINTENANCE,
    PRIORITIES,
    Settings,
    deployment_names,
    get_settings,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
POOL_MAINTENANCE = "maintenance/scheduled"  # prefect.yaml's


async def test_the_two_sets_never_share_a_name() -> None:
    s = Settings()
    embedded = deployment_names(s, embedded=True)
    pool = deployment_names(s, embedded=False)
    assert list(embedded) == list(pool) == list(PRIORITIES)
    assert pool == {p: f"scrape-job/{p}" for p in PRIORITIES}  # prefect.yaml's names
    assert embedded == {p: f"scrape-job/embedded-{p}" for p in PRIORITIES}
    assert not set(embedded.values()) & set(pool.values())
    assert EMBEDDED_MAINTENANCE != POOL_MAINTENANCE
    # the operator's choice: unset is the embedded stack, a pool name the pool's deployments
    assert deployment_names(s) == embedded
    assert deployment_names(s.model_copy(update={"work_pool": "shoal"})) == pool


async def test_the_api_starts_the_configured_set() -> None:
    base = get_settings().model_copy(update={"deployment_prefix": "sets-test"})
    ids = {}
    async with get_client() as client:  # deployments without a worker: runs stay Scheduled
        flow_id = await client.create_flow_from_name("sets-test")
        for name in ("embedded-normal", "normal"):
            ids[name] = await client.create_deployment(flow_id=flow_id, name=name)
    for work_pool, expected in ((None, "embedded-normal"), ("shoal", "normal")):
        settings = base.model_copy(update={"work_pool": work_pool})
        job = jobs.job_row("acct_sets", "sets", "normal", {"concurrency": 1}, 1)
        run_id = await start_flow_run(job, settings)
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        assert run.deployment_id == ids[expected], work_pool


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:  # only if the test failed before stopping it
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


async def test_embedded_worker_leaves_the_pool_deployments_alone(
    tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    settings = get_settings().model_copy(update={"work_pool": "shoal"})
    await setup_pool(settings)
    pool_names = [*deployment_names(settings).values(), POOL_MAINTENANCE]
    async with get_client() as client:  # the pool deployments, as prefect deploy --all makes them
        for full in pool_names:
            flow, name = full.split("/")
            flow_id = await client.create_flow_from_name(flow)
            await client.create_deployment(
                flow_id=flow_id,
                name=name,
                work_pool_name="shoal",
                work_queue_name="normal",
                schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=3600))]
                if full == POOL_MAINTENANCE
                else None,
            )
    embedded = [*deployment_names(settings, embedded=True).values(), EMBEDDED_MAINTENANCE]

    env = {k: v for k, v in os.environ.items() if k != "SHOAL_WORK_POOL"}
    env |= {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "SHOAL_WORKER_POLL_S": "1"}
    proc = _serve(env, tmp_path / "serve.log")
    stop_later.append(proc)
    async with get_client() as client:
        # registered, then READY once the runner polls for their runs: it serves them now
        deadline = time.monotonic() + 120
        while True:
            try:
                found = [await client.read_deployment_by_name(name) for name in embedded]
                if all(d.status == DeploymentStatus.READY for d in found):
                    break
            except ObjectNotFound:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the embedded deployments are not served"
            await asyncio.sleep(0.5)
        for name in embedded:
            d = await client.read_deployment_by_name(name)
            assert d.work_pool_name is None and not d.paused
        for name in pool_names:
            d = await client.read_deployment_by_name(name)
            assert (d.work_pool_name, d.paused) == ("shoal", False), name

        os.killpg(proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) is not None
        for name in embedded:  # paused on shutdown: its own...
            assert (await client.read_deployment_by_name(name)).paused, name
        for name in pool_names:  # ...and only its own
            d = await client.read_deployment_by_name(name)
            assert (d.work_pool_name, d.paused) == ("shoal", False), name
        (schedule,) = (await client.read_deployment_by_name(POOL_MAINTENANCE)).schedules
        assert schedule.active
