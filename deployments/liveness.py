"""Liveness of flow runs on any worker, from Prefect's own heartbeats.

Prefect 3's flow engine sends a ``prefect.flow-run.heartbeat`` event every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds from a thread of the flow-run process itself,
wherever it runs (the embedded worker, a process worker on another machine). What Prefect's
documentation prescribes for self-hosted servers ("Detect zombie flows") is an automation: after
a heartbeat, expect another heartbeat or a final state within a window, else set the run
``Crashed``. ``ensure_zombie_automation`` keeps that automation on the server (one, by name,
idempotent; any number of service processes may call it), limited to runs tagged ``shoal`` so an
operator's other flows are not ours to crash. The resume service (``deployments/reaper.py``) then
resumes the job of a ``Crashed`` run, once.

Timing: heartbeats every ``SHOAL_HEARTBEAT_S`` (30 s, the least Prefect accepts) and a window of
``SHOAL_ZOMBIE_AFTER_S`` (60 s: one missed beat is tolerated, two are not) put a dead machine's
run in ``Crashed`` 30-60 s after it died, plus the triggers service's
evaluation period (~5 s), plus one resume pass (``SHOAL_RESUME_POLL_S``). A run whose process
dies while its worker lives is ``Crashed`` by the worker at once, without waiting for this.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import PrefectHTTPStatusError

from shoal.settings import Settings

log = logging.getLogger("shoal.liveness")

ZOMBIE_AUTOMATION = "shoal: crash flow runs whose heartbeats stopped"
_FINAL_EVENTS = {
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
}


def use_heartbeats(settings: Settings) -> None:
    """Make flow runs started from this process send heartbeats every ``heartbeat_s`` seconds
    (Prefect's default is 180 s). An operator's own ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` wins."""
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(settings.heartbeat_s))


def zombie_automation(settings: Settings) -> AutomationCore:
    """The automation that marks a silent Shoal flow run ``Crashed`` (see module docstring)."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            "Shoal: a flow run tagged 'shoal' that sent a heartbeat and then neither another "
            f"heartbeat nor a final state within {settings.zombie_after_s} s is Crashed; "
            "Shoal's resume service then resumes its job on a live worker."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *_FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.id": "prefect.tag.shoal", "prefect.resource.role": "tag"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.zombie_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {settings.zombie_after_s} s: its process, worker or "
                    "machine is gone"
                ),
            )
        ],
    )


async def ensure_zombie_automation(settings: Settings) -> None:
    """Create the automation, or bring the one of that name up to date (a changed
    ``SHOAL_ZOMBIE_AFTER_S``). An unchanged one is left alone: Prefect keeps each watched run's
    window (its "bucket") under the trigger's id, so replacing the trigger at every service
    start would forget every run it was watching — a worker that died while the services
    restarted would never be noticed. Two services starting at once may both create one; both
    then keep the same one (the lowest id) and delete the other."""
    want = zombie_automation(settings)
    async with get_client() as client:
        have = sorted(await client.read_automations_by_name(ZOMBIE_AUTOMATION), key=_id)
        if not have:
            await client.create_automation(want)
            log.info("created the automation %r", ZOMBIE_AUTOMATION)
            have = sorted(await client.read_automations_by_name(ZOMBIE_AUTOMATION), key=_id)
        elif _differs(have[0], want):  # its watched windows start again from the next beats
            with _gone_is_fine():
                await client.update_automation(have[0].id, want)
            log.info("updated the automation %r", ZOMBIE_AUTOMATION)
        for extra in have[1:]:
            with _gone_is_fine():  # another service deleted it first
                await client.delete_automation(extra.id)


def _differs(have: Any, want: AutomationCore) -> bool:
    fields = {"posture", "within", "threshold", "after", "expect", "match", "match_related"}
    return (
        not have.enabled
        or have.trigger.model_dump(include=fields) != want.trigger.model_dump(include=fields)
        or [a.model_dump() for a in have.actions] != [a.model_dump() for a in want.actions]
    )


@contextlib.contextmanager
def _gone_is_fine() -> Iterator[None]:
    try:
        yield
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise


def _id(automation: Any) -> str:
    return str(automation.id)
