"""``client.schedules``: the account's schedules (CONTRACT.md, "Schedules").

Bodies are plain mappings, written as the contract shows them (a YAML file of them is what
``shoal schedules apply`` reads); answers are :class:`Schedule`. A schedule is named by its id
(``sch_…``); ``find`` looks schedules up by name.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from shoal.client import _calls as calls
from shoal.client._http import AsyncHttp, Http
from shoal.client._models import Schedule, SchedulePage, SubmittedJob

_PAGE = 100


class Schedules:
    """Schedule calls of one client: list, get, create, patch, delete, run, pause, resume."""

    def __init__(self, http: Http) -> None:
        self._http = http

    def list(self, *, limit: int = 20, offset: int = 0) -> SchedulePage:
        return self._http.run(calls.list_schedules(limit, offset))

    def all(self) -> Iterator[Schedule]:
        """Every schedule of the account, a page at a time."""
        offset = 0
        while True:
            page = self.list(limit=_PAGE, offset=offset)
            yield from page.schedules
            offset += len(page.schedules)
            if not page.schedules or offset >= page.total:
                return

    def find(self, name: str) -> builtins.list[Schedule]:
        """The account's schedules called ``name`` (none or one: names are unique)."""
        return [s for s in self.all() if s.name == name]

    def get(self, schedule_id: str) -> Schedule:
        return self._http.run(calls.get_schedule(schedule_id))

    def create(self, body: Mapping[str, Any]) -> Schedule:
        return self._http.run(calls.create_schedule(body))

    def patch(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule:
        """Replace the given top-level fields (``{"paused": true}`` pauses)."""
        return self._http.run(calls.patch_schedule(schedule_id, changes))

    def delete(self, schedule_id: str) -> None:
        """``204``; a run already started goes on."""
        self._http.run(calls.delete_schedule(schedule_id))

    def run(self, schedule_id: str) -> SubmittedJob:
        """Start a run now: the job it started."""
        return self._http.run(calls.run_schedule(schedule_id))

    def pause(self, schedule_id: str) -> Schedule:
        return self.patch(schedule_id, {"paused": True})

    def resume(self, schedule_id: str) -> Schedule:
        return self.patch(schedule_id, {"paused": False})


class AsyncSchedules:
    """:class:`Schedules` of an ``AsyncClient``."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def list(self, *, limit: int = 20, offset: int = 0) -> SchedulePage:
        return await self._http.run(calls.list_schedules(limit, offset))

    async def all(self) -> AsyncIterator[Schedule]:
        offset = 0
        while True:
            page = await self.list(limit=_PAGE, offset=offset)
            for s in page.schedules:
                yield s
            offset += len(page.schedules)
            if not page.schedules or offset >= page.total:
                return

    async def find(self, name: str) -> builtins.list[Schedule]:
        return [s async for s in self.all() if s.name == name]

    async def get(self, schedule_id: str) -> Schedule:
        return await self._http.run(calls.get_schedule(schedule_id))

    async def create(self, body: Mapping[str, Any]) -> Schedule:
        return await self._http.run(calls.create_schedule(body))

    async def patch(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule:
        return await self._http.run(calls.patch_schedule(schedule_id, changes))

    async def delete(self, schedule_id: str) -> None:
        await self._http.run(calls.delete_schedule(schedule_id))

    async def run(self, schedule_id: str) -> SubmittedJob:
        return await self._http.run(calls.run_schedule(schedule_id))

    async def pause(self, schedule_id: str) -> Schedule:
        return await self.patch(schedule_id, {"paused": True})

    async def resume(self, schedule_id: str) -> Schedule:
        return await self.patch(schedule_id, {"paused": False})
