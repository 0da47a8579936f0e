"""A Shoal schedule on a pool deployment survives ``prefect deploy --all`` run again (an operator
updating the deployments of ``prefect.yaml``, whose ``schedules: null`` keeps them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from deployments import prefect_schedules
from shoal.settings import get_settings
from shoal.store import ScheduleRow, utcnow
from tests.integration.test_pool_deploy import _deployed, code  # noqa: F401 - the fixture

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_prefect_deploy_again_keeps_shoal_schedules(
    code: Path,  # noqa: F811
    tmp_path: Path,
    shoal_env,  # type: ignore[no-untyped-def]
) -> None:
    shoal_env("SHOAL_WORK_POOL", "shoal")
    await _deployed(code, tmp_path)
    row = ScheduleRow(
        id="sch_POOLDEPLOY1",
        account_id="acct_X",
        name="pool",
        cron="0 2 * * *",
        timezone="Europe/Berlin",
        job={"urls": ["https://example.com/"], "priority": "low"},
        paused=1,
        created_at=utcnow(),
    )
    await prefect_schedules.put_schedule(row, get_settings())

    await _deployed(code, tmp_path)  # the operator deploys again
    async with get_client() as client:
        dep = await client.read_deployment_by_name("scrape-job/low")
    (kept,) = [s for s in dep.schedules if s.slug == "shoal-sch_POOLDEPLOY1"]
    assert kept.parameters == {"schedule_id": "sch_POOLDEPLOY1"} and kept.active is False
    assert (kept.schedule.cron, kept.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
    await prefect_schedules.remove_schedule(row.id, get_settings())
