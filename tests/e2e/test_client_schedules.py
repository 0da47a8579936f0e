"""``client.schedules`` (and its asyncio twin) against the real stack's ``/v1/schedules``:
create, get, list, find, patch, pause, resume, run now (a job with ``schedule_id``), delete;
a ``422`` names the field, another account's schedule is ``404``. Each test in an account of
its own."""

from __future__ import annotations

import pytest

from shoal.client import AsyncClient, Client, ShoalError
from tests.e2e.stack import Stack
from tests.sites.catalog import Site


def body(site: Site, name: str = "nightly") -> dict:
    return {
        "name": name,
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "job": {
            "input": {"urls": [site.url("/p/1"), site.url("/p/2")]},
            "defaults": {"extract": {"name": "string", "price": "number"}},
        },
        "compare": {"key": "url"},
        "quality": {"min_rows": 2},
    }


def test_schedules_through_the_client(stack: Stack, key: str, site: Site) -> None:
    with Client(stack.base, key) as c:
        made = c.schedules.create(body(site))
        assert made.id.startswith("sch_") and made.name == "nightly"
        assert (made.cron, made.timezone, made.paused) == ("0 2 * * *", "Europe/Berlin", False)
        assert len(made.next_runs) == 5
        again = c.schedules.get(made.id)
        assert again.model_dump(exclude={"next_runs"}) == made.model_dump(exclude={"next_runs"})
        assert [s.id for s in c.schedules.find("nightly")] == [made.id]
        page = c.schedules.list(limit=10)
        assert page.total == 1 and page.schedules[0].id == made.id

        moved = c.schedules.patch(made.id, {"interval_s": 3600, "quality": None})
        assert (moved.cron, moved.interval_s, moved.quality) == (None, 3600, None)
        assert c.schedules.pause(made.id).paused is True
        assert c.schedules.get(made.id).next_runs == []  # paused: none due
        assert c.schedules.resume(made.id).paused is False

        run = c.schedules.run(made.id)
        done = c.wait(run.id, poll=0.2)
        assert done.status == "completed" and done.model_dump()["schedule_id"] == made.id
        assert [j.id for j in c.list(schedule_id=made.id).jobs] == [run.id]
        assert c.schedules.get(made.id).last_job_id == run.id

        with pytest.raises(ShoalError) as caught:
            c.schedules.create({**body(site, "bad"), "cron": "not a cron", "timezone": "Mars/X"})
        assert caught.value.status == 422
        assert {"cron", "timezone"} <= {e.loc for e in caught.value.errors}

        with Client(stack.base, stack.key) as other, pytest.raises(ShoalError) as caught:
            other.schedules.get(made.id)
        assert caught.value.status == 404

        c.schedules.delete(made.id)
        with pytest.raises(ShoalError) as caught:
            c.schedules.get(made.id)
        assert caught.value.status == 404 and c.schedules.find("nightly") == []


async def test_schedules_through_the_async_client(stack: Stack, key: str, site: Site) -> None:
    async with AsyncClient(stack.base, key) as c:
        made = await c.schedules.create({**body(site, "a"), "paused": True})
        assert made.paused is True
        assert [s.id async for s in c.schedules.all()] == [made.id]
        assert [s.id for s in await c.schedules.find("a")] == [made.id]
        assert (await c.schedules.resume(made.id)).paused is False
        run = await c.schedules.run(made.id)
        assert (await c.get(run.id)).model_dump()["schedule_id"] == made.id
        await c.schedules.delete(made.id)
        assert (await c.schedules.list()).total == 0
