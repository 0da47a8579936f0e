"""The webhook dispatcher: runs in the embedded worker beside the served flows and the reaper.

Every ``SHOAL_WEBHOOK_POLL_S`` it claims the due events of the outbox (the job store) and starts
one ``deliver_webhook`` task per attempt as its own asyncio task, at most
``SHOAL_WEBHOOK_CONCURRENCY`` at once, so a receiver that hangs until the timeout delays no
other receiver and no job. Pending events live in the store: after a restart they are picked up
again (an attempt cut short by the stop is due again when its lease ends). Claiming is a
conditional update, so several workers can run dispatchers on one store.
"""

from __future__ import annotations

import asyncio
import logging

from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

from shoal import webhooks
from shoal.settings import Settings
from shoal.store import WebhookEventRow, get_store
from tasks import deliver_webhook

log = logging.getLogger("shoal.webhooks")


async def _deliver(event: WebhookEventRow) -> None:
    try:
        await deliver_webhook(event.id, event.attempts + 1)
    except asyncio.CancelledError:
        raise
    except Exception:  # recorded nowhere else: the lease makes the event due again
        log.exception("webhook event %s: the delivery task failed", event.id)


async def dispatch_forever(settings: Settings) -> None:
    """Claim and deliver due events until cancelled; in-flight attempts are cancelled too."""
    # Task runs outside a flow run cannot send their logs to the Prefect API (their states do
    # reach it): don't warn about it. The delivery tasks inherit this settings context.
    with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        await _dispatch(settings)


async def _dispatch(settings: Settings) -> None:
    store = get_store(settings)
    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            free = settings.webhook_concurrency - len(running)
            if free > 0:
                try:
                    events = await asyncio.to_thread(webhooks.claim_due, store, settings, free)
                except Exception:  # the store is busy or away: try again at the next poll
                    log.exception("webhooks: could not claim due events")
                    events = []
                for event in events:
                    t = asyncio.create_task(_deliver(event), name=f"webhook-{event.id}")
                    running.add(t)
                    t.add_done_callback(running.discard)
            await asyncio.sleep(settings.webhook_poll_s)
    finally:
        stopping = list(running)
        for t in stopping:
            t.cancel()
        if stopping:  # bounded: a stop of the worker must stay quick
            await asyncio.wait(stopping, timeout=5)
