"""Webhook URLs whose host is an IPv4 literal in a legacy spelling, or a numeric host that is
no address at all.

``http://2130706433/``, ``http://127.1/``, ``http://0x7f.1/`` and ``http://017700000001/`` are
all 127.0.0.1 to libc's resolver. They used to pass the check at job creation (it knew only the
dotted-quad form) and, at delivery, fail on aiohttp's refusal of a non-canonical address: a
``connect`` error, retried for 24 hours. The guard now reads every ``inet_aton`` form, so the
job is refused (422 at ``webhook.url``), and an event already made with such a URL gives up at
its first attempt. A numeric host that is no IPv4 address (``1.2.3.4.5``) is invalid, never
sent to DNS.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal import webhooks
from shoal.finalize import finalize_job
from shoal.output import part_url, write_part
from shoal.settings import Settings
from shoal.storage import get_storage
from shoal.store import Store, utcnow
from tests.sites.receiver import Receiver

URL1 = {"input": {"urls": ["https://example.com/"]}}
LEGACY = ["2130706433", "127.1", "0x7f.1", "017700000001"]
INVALID = ["1.2.3.4.5", "256.1"]


@pytest.mark.parametrize("host", LEGACY + INVALID)
@pytest.mark.parametrize("form", ["string", "object"])
def test_a_webhook_on_a_legacy_or_invalid_ipv4_host_is_422(  # type: ignore[no-untyped-def]
    client, alice, flow_starter, host, form
):
    """Refused at creation, naming the field, before any flow run is started."""
    url = f"http://{host}/hook"
    webhook: Any = url if form == "string" else {"url": url}
    r = client.post("/v1/jobs", headers=alice.headers, json={**URL1, "webhook": webhook})
    assert r.status_code == 422, r.text
    loc = "webhook" if form == "string" else "webhook.url"
    (error,) = [e for e in r.json()["errors"] if e["loc"] == loc]
    assert ("(127.0.0.1)" if host in LEGACY else "not a valid IPv4 address") in error["msg"]
    assert flow_starter.calls == []


@pytest.mark.parametrize("host", [*LEGACY, "1.2.3.4.5"])
async def test_delivery_to_such_a_host_gives_up_at_the_first_attempt(  # type: ignore[no-untyped-def]
    make_job, alice, store: Store, settings: Settings, receiver: Receiver, host: str
):
    """An event made before the rule (or with the guard on later) fails for good at once: no
    24 hours of retries, and nothing reaches the receiver listening on 127.0.0.1."""
    guarded = settings.model_copy(
        update={"allow_private_networks": False, "webhook_timeout_s": 2.0}
    )
    _end_job(make_job, alice, guarded, f"http://{host}:{receiver.port}/hook")
    attempt = await _attempt(store, guarded)
    assert attempt.state == "gave_up", attempt
    assert attempt.error is not None
    assert attempt.error.startswith("blocked: " if host in LEGACY else "invalid_url: ")
    assert attempt.next_attempt_at is None
    assert receiver.received == []


def _end_job(make_job, alice, settings: Settings, url: str) -> None:  # type: ignore[no-untyped-def]
    """A one-URL job with a webhook to ``url`` ends: its ``job.completed`` event is due."""
    job = make_job(
        alice.account,
        status="running",
        urls_total=1,
        started_at=utcnow(),
        spec={
            "defaults": {},
            "concurrency": 1,
            "output": {},
            "fields": {},
            "webhook": {"url": url, "events": ["job.completed"]},
        },
    )
    storage = get_storage(settings)
    row = {"url": "https://example.com/", "input_index": 0, "status": "ok", "http_status": 200,
           "attempts": 1, "credits": 1}  # fmt: skip
    write_part(storage, part_url(storage, job.id, 0), [row])
    finalize_job(job.id, settings)


async def _attempt(store: Store, settings: Settings) -> webhooks.Attempt:
    """Claim the one event (it is due at once; polled, as the dispatcher does) and try it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        claimed = await asyncio.to_thread(webhooks.claim_due, store, settings, 10)
        if claimed:
            (event,) = claimed
            return await webhooks.deliver(event, store, settings)
        await asyncio.sleep(0.02)
    raise AssertionError("no event became due")


@pytest.mark.parametrize("host", LEGACY)
async def test_where_private_addresses_are_allowed_a_legacy_spelling_is_delivered(  # type: ignore[no-untyped-def]
    make_job, alice, store: Store, settings: Settings, receiver: Receiver, host: str
):
    """With the guard off (tests, local demos) the URL is delivered to the address its host
    spells, as libc would connect: not refused by aiohttp's canonical-only parser and retried."""
    allowing = settings.model_copy(
        update={"allow_private_networks": True, "webhook_timeout_s": 2.0}
    )
    _end_job(make_job, alice, allowing, f"http://{host}:{receiver.port}/hook")
    attempt = await _attempt(store, allowing)
    assert (attempt.state, attempt.status_code, attempt.error) == ("delivered", 200, None)
    assert [r.path for r in receiver.received] == ["/hook"]
