"""Task: one attempt to deliver a webhook event.

One task run per attempt, started by the worker's dispatcher (``deployments/webhooks.py``),
never by a job's flow: a slow or dead receiver holds up nothing but its own delivery. The
retries over 24 hours are the outbox's (``shoal.webhooks.next_attempt``), not Prefect's: they
must outlive a worker restart, and a Prefect retry would sleep in the worker meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shoal import webhooks
from shoal.settings import get_settings
from shoal.store import get_store, utcnow


@task(
    name="deliver_webhook",
    task_run_name="deliver-{event_id}-attempt-{attempt}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def deliver_webhook(event_id: str, attempt: int) -> dict[str, Any]:
    """POST the event once, signed, and record the attempt (``attempt`` names the run)."""
    logger = get_run_logger()
    settings = get_settings()
    store = get_store(settings)
    event = await asyncio.to_thread(store.get_webhook_event, event_id)
    if event is None or event.state != "pending":
        logger.info("webhook event %s is not pending any more", event_id)
        return {"event_id": event_id, "skipped": True}
    done = await webhooks.deliver(event, store, settings)
    if done.delivered:
        logger.info("%s %s delivered to %s", event.type, event_id, event.url)
    else:
        logger.warning(
            "%s %s attempt %d to %s failed (%s); %s",
            event.type,
            event_id,
            done.attempt,
            event.url,
            done.error,
            f"next in {(done.next_attempt_at - utcnow()).total_seconds():.1f} s"
            if done.next_attempt_at
            else "gave up",
        )
    return asdict(done)
