"""Webhooks: the event a job's end makes, its signature, and one delivery attempt.

How an event travels:

1. The transaction that ends a job (``Store.finish``, called by ``finalize_job``, ``fail_job``
   and ``submit`` when the flow run could not start) inserts its event through
   ``event_maker``: the body is built once, so every attempt sends the same bytes. A job
   whose quality gates failed also gets ``job.quality_failed`` (same body, its own id), added
   to the same transaction: both events exist, or neither.
2. The worker's dispatcher (``deployments/webhooks.py``) claims due events (``claim_due``) and
   runs one ``deliver_webhook`` task per attempt (``tasks/deliver_webhook.py``), which calls
   ``deliver``: sign with the account's current secret, POST, record the attempt, and schedule
   the next one (``next_attempt``) or end the event ``delivered`` / ``gave_up``.

The job's flow never waits for any of this. Delivery is at least once: a receiver should
deduplicate on the event id (``Shoal-Event-Id``, the body's ``id``).

Signature: ``Shoal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` keyed
with the account's webhook secret (the whole ``whsec_…`` string as UTF-8); ``verify`` checks one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import object_session

from shoal import __version__, jobs
from shoal.contract import JobSpec, WebhookEventType, WebhookPayload
from shoal.fetch import AddressPolicy, BlockedAddress
from shoal.settings import Settings
from shoal.store import JobRow, Store, WebhookDeliveryRow, WebhookEventRow, aware, new_id, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Shoal-Signature"
USER_AGENT = f"Shoal-Webhooks/{__version__}"
#: How far a signature's timestamp may be from the receiver's clock (``verify``).
DEFAULT_TOLERANCE_S = 300
#: The event a final status sends (``job.completed`` covers ``partial``).
EVENT_FOR_STATUS: dict[str, WebhookEventType] = {
    "completed": "job.completed",
    "partial": "job.completed",
    "cancelled": "job.cancelled",
    "failed": "job.failed",
}
# Failures that another attempt cannot fix: the address is refused by the operator's policy,
# or the URL cannot be requested at all.
_PERMANENT = frozenset({"blocked", "invalid_url"})
# A claimed attempt that has not been recorded after this much past its timeout (the worker
# died during it) is due again.
_LEASE_MARGIN_S = 30.0


# --- the event ----------------------------------------------------------------------------


def event_maker(settings: Settings, store: Store) -> Callable[[JobRow], WebhookEventRow | None]:
    """For ``Store.finish``: the event of a job that just ended, or None when the job has no
    webhook or its webhook does not take this event type. ``job.quality_failed``, when due,
    is added to the session that holds ``row`` (``Store.finish``'s transaction: it takes one
    event, and this keeps both in that one transaction).

    Never raises: a job must end even if its event cannot be made (that is logged)."""

    def make(row: JobRow) -> WebhookEventRow | None:
        try:
            made = _make_events(row, settings, store)
        except Exception:
            log.exception("could not make the webhook event of job %s", row.id)
            return None
        if len(made) > 1:
            session = object_session(row)
            if session is None:
                log.error("job %s: no transaction to add its %s event to", row.id, made[1].type)
            else:
                session.add_all(made[1:])
        return made[0] if made else None

    return make


def event_types(row: JobRow) -> list[WebhookEventType]:
    """The events a job that just ended sends (before its webhook's choice): its end event,
    and ``job.quality_failed`` when a quality gate failed."""
    etype = EVENT_FOR_STATUS.get(row.status)
    types: list[WebhookEventType] = [etype] if etype is not None else []
    if (
        row.quality
        and not row.quality.get("passed", True)
        and row.status in ("completed", "partial")
    ):
        types.append("job.quality_failed")
    return types


def _make_events(row: JobRow, settings: Settings, store: Store) -> list[WebhookEventRow]:
    hook = JobSpec.model_validate(row.spec).webhook
    if hook is None:
        return []
    types = [t for t in event_types(row) if t in hook.events]
    if not types:
        return []
    now = utcnow()
    data = jobs.to_public(row, store, settings)
    made = []
    for etype in types:
        event_id = new_id("evt", 8)
        body = WebhookPayload(id=event_id, type=etype, created_at=now, data=data).model_dump_json()
        made.append(
            WebhookEventRow(
                id=event_id,
                job_id=row.id,
                account_id=row.account_id,
                type=etype,
                url=hook.url,
                payload=body,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return made


# --- signing ------------------------------------------------------------------------------


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Shoal-Signature`` header value of ``body``: ``t=<unix seconds>,v1=<hex>``."""
    t = str(int(time.time()) if timestamp is None else timestamp)
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``header`` (``Shoal-Signature``) signs exactly ``body`` with ``secret`` and
    its timestamp is within ``tolerance_s`` of ``now`` (default: the clock), which refuses
    replays of old deliveries. Pass the raw body bytes, not re-serialized JSON."""
    t: str | None = None
    given: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            t = value
        elif key == "v1":
            given.append(value)
    if t is None or not t.isdigit() or not given:
        return False
    if abs((time.time() if now is None else now) - int(t)) > tolerance_s:
        return False
    expected = _digest(secret, t, body)
    return any(hmac.compare_digest(expected, sig) for sig in given)


# --- scheduling ---------------------------------------------------------------------------


def backoff_s(attempt: int, settings: Settings, jitter: float | None = None) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): ``webhook_backoff_s``
    doubled per attempt, at most ``webhook_backoff_max_s``, then up to 20 % shorter at random
    (``jitter`` in [0, 1)) so receivers that failed together are not retried in lockstep."""
    nominal = settings.webhook_backoff_s * 2.0 ** min(max(attempt - 1, 0), 62)
    nominal = min(nominal, settings.webhook_backoff_max_s)
    return nominal * (1.0 - 0.2 * (random.random() if jitter is None else jitter))


def next_attempt(
    created_at: datetime, attempt: int, now: datetime, settings: Settings
) -> datetime | None:
    """When to try again after failed attempt ``attempt``; None to give up: the next try
    would come later than ``webhook_retry_for_s`` after the event was made."""
    due = now + timedelta(seconds=backoff_s(attempt, settings))
    if due > created_at + timedelta(seconds=settings.webhook_retry_for_s):
        return None
    return due


def claim_due(store: Store, settings: Settings, limit: int) -> list[WebhookEventRow]:
    """Take up to ``limit`` due events for one attempt each (see ``shoal.store._webhooks``)."""
    now = utcnow()
    lease_until = now + timedelta(seconds=settings.webhook_timeout_s + _LEASE_MARGIN_S)
    return store.claim_webhook_events(now, lease_until, limit)


# --- one attempt --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt did (also written to the delivery log)."""

    event_id: str
    attempt: int
    status_code: int | None
    delivered: bool
    error: str | None
    duration_ms: int
    state: str
    next_attempt_at: datetime | None


async def deliver(event: WebhookEventRow, store: Store, settings: Settings) -> Attempt:
    """One attempt to deliver ``event``: sign, POST, record the attempt, and schedule the
    next one or end the event. Errors of the receiver are recorded, not raised."""
    attempt = event.attempts + 1
    account = await asyncio.to_thread(store.get_account, event.account_id)
    requested_at = utcnow()
    started = time.perf_counter()
    status: int | None = None
    permanent = False
    if account is None:
        error: str | None = "account: the job's account no longer exists"
        permanent = True
    else:
        body = event.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Shoal-Event-Id": event.id,
            "Shoal-Event-Type": event.type,
            SIGNATURE_HEADER: sign(account.webhook_secret, body),
        }
        status, error, permanent = await _post(event.url, body, headers, settings)
    duration_ms = round((time.perf_counter() - started) * 1000)
    delivered = error is None
    if delivered:
        state, due = "delivered", None
    else:
        created = aware(event.created_at) or requested_at
        due = None if permanent else next_attempt(created, attempt, utcnow(), settings)
        state = "pending" if due is not None else "gave_up"
    row = WebhookDeliveryRow(
        id=new_id("whd", 8),
        event_id=event.id,
        job_id=event.job_id,
        event_type=event.type,
        attempt=attempt,
        url=event.url,
        requested_at=requested_at,
        status_code=status,
        delivered=int(delivered),
        error=error,
        duration_ms=duration_ms,
        next_retry_at=due,
    )
    await asyncio.to_thread(store.record_webhook_attempt, row, state=state, next_attempt_at=due)
    return Attempt(event.id, attempt, status, delivered, error, duration_ms, state, due)


async def _post(
    url: str, body: bytes, headers: dict[str, str], settings: Settings
) -> tuple[int | None, str | None, bool]:
    """POST ``body`` once: (status, error or None when 2xx, whether the error is permanent).

    The SSRF guard of the fetch engine applies (the connected address is the checked one);
    redirects are not followed (a 3xx is a failed attempt)."""
    import aiohttp  # the worker's; the API, which imports this module too, never sends
    from yarl import URL

    from shoal.fetch import GuardedResolver, classify

    timeout_s = settings.webhook_timeout_s
    policy = AddressPolicy.from_settings(settings)
    try:
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            return None, "invalid_url: not an http(s) URL with a host", True
        ip = policy.checked_literal(target.host)
        if ip is not None and ip.version == 4 and target.host != str(ip):
            target = target.with_host(str(ip))  # 127.1 is 127.0.0.1: aiohttp takes only that
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(aiohttp.ThreadedResolver(), policy), force_close=True
        )
        async with (
            asyncio.timeout(timeout_s + 1.0),  # a hard stop beyond aiohttp's own timer
            aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                trust_env=False,
            ) as session,
            session.post(target, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            status = resp.status
    except BlockedAddress as exc:  # the guard reads every IPv4 spelling libc would connect to
        code = "invalid_url" if exc.address is None else "blocked"  # None: numeric, no IPv4
        return None, f"{code}: {exc}", True
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        code = classify(exc)
        if code == "timeout":
            return None, f"timeout: no answer within {timeout_s:g} s", False
        text = str(exc).strip() or type(exc).__name__
        return None, f"{code}: {text}", code in _PERMANENT
    if 200 <= status < 300:
        return status, None, False
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    return status, f"http_status: the receiver answered {status}{note}", False
