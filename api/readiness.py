"""Readiness: would a job posted now start? ``GET /v1/health`` answers ``200`` only then.

Three things must hold: the job store answers, the Prefect API answers, and every deployment the
API starts jobs on (``shoal.settings.deployment_names``) exists and is not paused (the embedded
worker pauses its deployments when it stops). Each check has a short timeout
and a ready answer is kept for ``KEEP_S``, so load balancers and ``shoal up`` may ask often.
Whatever fails is named in the ``503`` (``NotReady``), with the same words ``POST /v1/jobs`` uses
when starting a flow run fails for that reason (``prefect_access.scheduler_errors``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Depends
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from api.deps import SettingsDep
from api.prefect_access import deployment_missing, prefect_unreachable
from shoal.errors import NotReady
from shoal.settings import Settings, deployment_names
from shoal.store import get_store

#: the longest a check waits for the store, or for Prefect
TIMEOUT_S = 2.0
#: how long a ready answer is kept
KEEP_S = 2.0

_ready_until: dict[tuple[str, str, tuple[str, ...]], float] = {}


async def _store_problem(settings: Settings) -> str | None:
    try:
        await asyncio.wait_for(asyncio.to_thread(get_store(settings).count_accounts), TIMEOUT_S)
    except TimeoutError:
        return f"the job store did not answer within {TIMEOUT_S:.0f} s"
    except Exception as exc:
        return f"the job store is unreachable ({type(exc).__name__}: {exc})"
    return None


async def _prefect_problem(url: str, names: list[str]) -> str | None:
    if not url:
        return "PREFECT_API_URL is not set: the API does not know where Prefect is"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async with get_client(httpx_settings={"timeout": TIMEOUT_S}) as client:
                found = await asyncio.gather(
                    *(client.read_deployment_by_name(n) for n in names), return_exceptions=True
                )
    except TimeoutError:
        return f"the scheduler (Prefect) at {url} did not answer within {TIMEOUT_S:.0f} s"
    except Exception as exc:
        return prefect_unreachable(url, exc)
    failed = [r for r in found if isinstance(r, Exception) and not isinstance(r, ObjectNotFound)]
    if failed:
        return prefect_unreachable(url, failed[0])
    missing = [n for n, r in zip(names, found, strict=True) if isinstance(r, ObjectNotFound)]
    if missing:
        return deployment_missing(missing)
    paused = [n for n, r in zip(names, found, strict=True) if getattr(r, "paused", False)]
    if paused:  # a runner pauses its deployments when it stops; runs would wait for it
        return f"deployment {', '.join(paused)} paused: is a worker serving it?"
    return None


async def check_ready(settings: SettingsDep) -> None:
    """``NotReady`` naming each thing that stops a job posted now from starting."""
    names = list(deployment_names(settings).values())
    url = get_current_settings().api.url or ""
    key = (settings.db_url, url, tuple(names))
    if _ready_until.get(key, 0.0) > time.monotonic():
        return
    problems = [
        p for p in await asyncio.gather(_store_problem(settings), _prefect_problem(url, names)) if p
    ]
    if problems:
        _ready_until.pop(key, None)
        raise NotReady("not ready: " + "; ".join(problems))
    _ready_until[key] = time.monotonic() + KEEP_S


Ready = Annotated[None, Depends(check_ready)]
