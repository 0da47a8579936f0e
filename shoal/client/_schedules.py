"""``client.schedules``: the account's schedules (CONTRACT.md, "Schedules").

Bodies are plain mappings, written as the contract shows them (a YAML file of them is what
``shoal schedules apply`` reads); answers are :class:`Schedule`. A schedule is named by its id
(``sch_…``); :meth:`Schedules.find` looks one up by name.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from typing import Any

from shoal.client._http import Http
from shoal.client._models import Schedule, SchedulePage, SubmittedJob

_PAGE = 100


class Schedules:
    """Schedule calls of one client: list, get, create, patch, delete, run, pause, resume."""

    def __init__(self, http: Http) -> None:
        self._http = http

    def list(self, *, limit: int = 20, offset: int = 0) -> SchedulePage:
        r = self._http.request("GET", "/v1/schedules", params={"limit": limit, "offset": offset})
        return SchedulePage.model_validate(r.json())

    def all(self) -> Iterator[Schedule]:
        """Every schedule of the account, a page at a time."""
        offset = 0
        while True:
            page = self.list(limit=_PAGE, offset=offset)
            yield from page.schedules
            offset += len(page.schedules)
            if not page.schedules or offset >= page.total:
                return

    def get(self, schedule_id: str) -> Schedule:
        return Schedule.model_validate(self._http.request("GET", self._path(schedule_id)).json())

    def find(self, name: str) -> builtins.list[Schedule]:
        """The account's schedules called ``name`` (the API does not promise names are unique;
        ``shoal schedules apply`` refuses to act on a name held twice)."""
        return [s for s in self.all() if s.name == name]

    def create(self, body: Mapping[str, Any]) -> Schedule:
        r = self._http.request("POST", "/v1/schedules", json=dict(body))
        return Schedule.model_validate(r.json())

    def patch(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule:
        """Replace the given top-level fields (``{"paused": true}`` pauses)."""
        r = self._http.request("PATCH", self._path(schedule_id), json=dict(changes))
        return Schedule.model_validate(r.json())

    def delete(self, schedule_id: str) -> None:
        """``204``; a run already started goes on."""
        self._http.request("DELETE", self._path(schedule_id))

    def run(self, schedule_id: str) -> SubmittedJob:
        """Start a run now: the job it started."""
        r = self._http.request("POST", self._path(schedule_id) + "/run")
        return SubmittedJob.model_validate(r.json())

    def pause(self, schedule_id: str) -> Schedule:
        return self.patch(schedule_id, {"paused": True})

    def resume(self, schedule_id: str) -> Schedule:
        return self.patch(schedule_id, {"paused": False})

    @staticmethod
    def _path(schedule_id: str) -> str:
        return f"/v1/schedules/{schedule_id}"
