"""Webhooks: signing, the retry schedule, the outbox (one event per ended job), the `webhook`
field of `POST /v1/jobs`, and delivery attempts against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from shoal import jobs, webhooks
from shoal.contract import JobPublic, JobSpec
from shoal.finalize import fail_job, finalize_job
from shoal.output import part_url, write_part
from shoal.settings import Settings
from shoal.storage import get_storage
from shoal.store import Store, WebhookEventRow, utcnow
from shoal.store._db import session_scope

#: the job store's rules are checked on SQLite and on PostgreSQL alike
STORES = ("sqlite", "postgres")

PROBLEM = "application/problem+json"
ALL_EVENTS = ["job.completed", "job.cancelled", "job.failed", "job.quality_failed"]


def spec_with(url: str | None, events: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"defaults": {}, "concurrency": 4, "output": {}, "fields": {}}
    if url is not None:
        spec["webhook"] = {"url": url, "events": events or ALL_EVENTS}
    return spec


def events_of(store: Store, job_id: str) -> list[WebhookEventRow]:
    return store.webhook_log(job_id)[0]


# --- signing ------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"evt_1"}'
    header = webhooks.sign("whsec_abc", body, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert webhooks.verify("whsec_abc", body, header, now=1_700_000_100)


def test_verify_refuses_what_was_not_signed_so() -> None:
    body = b'{"id":"evt_1","type":"job.completed"}'
    now = time.time()
    header = webhooks.sign("whsec_abc", body)
    assert webhooks.verify("whsec_abc", body, header)
    assert not webhooks.verify("whsec_abc", body + b" ", header)  # body changed
    assert not webhooks.verify("whsec_other", body, header)  # another secret
    old = webhooks.sign("whsec_abc", body, timestamp=int(now) - 301)  # a replay
    assert not webhooks.verify("whsec_abc", body, old)
    assert webhooks.verify("whsec_abc", body, old, tolerance_s=600)
    t = header.split(",")[0]
    for garbage in ("", "t=,v1=", "v1=abc", t, f"{t},v1=00", "t=x,v1=" + "0" * 64):
        assert not webhooks.verify("whsec_abc", body, garbage), garbage
    # several v1 entries: one valid is enough
    assert webhooks.verify("whsec_abc", body, f"{t},v1={'0' * 64},{header.split(',')[1]}")


# --- schedule -----------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_delay_up_to_the_cap(settings: Settings) -> None:
    waits = [webhooks.backoff_s(n, settings, jitter=0.0) for n in range(1, 12)]
    assert waits[:9] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    assert waits[9:] == [3600, 3600]
    assert webhooks.backoff_s(500, settings, jitter=0.0) == 3600  # no overflow


def test_jitter_only_shortens_a_wait_by_at_most_a_fifth(settings: Settings) -> None:
    for n in (1, 4, 20):
        nominal = webhooks.backoff_s(n, settings, jitter=0.0)
        assert webhooks.backoff_s(n, settings, jitter=0.999) >= 0.8 * nominal
        got = {round(webhooks.backoff_s(n, settings), 6) for _ in range(20)}
        assert len(got) > 1 and all(0.8 * nominal <= w <= nominal for w in got)


def test_schedule_gives_up_24_hours_after_the_event(settings: Settings) -> None:
    created = utcnow()
    due = webhooks.next_attempt(created, 1, created, settings)
    assert due is not None and 8 <= (due - created).total_seconds() <= 10
    late = created + timedelta(seconds=86_400 - 100)  # the next wait (up to 1 h) passes 24 h
    assert webhooks.next_attempt(created, 30, late, settings) is None
    # the whole schedule: about 31 attempts in 24 h, none after it
    t, n = created, 0
    while (nxt := webhooks.next_attempt(created, n + 1, t, settings)) is not None:
        t, n = nxt, n + 1
    assert (t - created) <= timedelta(hours=24) and 25 <= n + 1 <= 40


# --- the outbox ---------------------------------------------------------------------------


@pytest.fixture
def hooked(make_job, alice, settings):  # type: ignore[no-untyped-def]
    """A running job of ``n`` URLs with a webhook; parts with ``errored`` indices written."""

    def _make(n: int = 2, errored: frozenset[int] = frozenset(), **kw: Any):  # type: ignore[no-untyped-def]
        job = make_job(
            alice.account,
            status="running",
            urls_total=n,
            started_at=utcnow(),
            spec=spec_with(kw.pop("url", "https://hooks.example/jobs"), kw.pop("events", None)),
        )
        storage = get_storage(settings)
        rows = [
            {
                "url": f"https://example.com/p/{i}",
                "input_index": i,
                "status": "error" if i in errored else "ok",
                "http_status": 404 if i in errored else 200,
                "attempts": 1,
                "credits": 1,
                **({"error": {"code": "http_4xx", "message": "404"}} if i in errored else {}),
            }
            for i in range(n)
        ]
        if rows:
            write_part(storage, part_url(storage, job.id, 0), rows)
        return job

    return _make


def test_a_job_that_ends_records_one_event_with_the_whole_body(hooked, store, settings):  # type: ignore[no-untyped-def]
    job = hooked(n=3, errored=frozenset({1}))
    row = finalize_job(job.id, settings)
    assert row.status == "partial"
    finalize_job(job.id, settings)  # a second finalize (hook, reaper) adds nothing
    fail_job(job.id, settings, "late")
    (event,) = events_of(store, job.id)
    assert event.type == "job.completed" and event.state == "pending" and event.attempts == 0
    assert event.url == "https://hooks.example/jobs" and event.id.startswith("evt_")
    body = json.loads(event.payload)
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["id"] == event.id and body["type"] == "job.completed"
    assert body["created_at"].endswith("Z")
    public = jobs.to_public(store.get_job(job.id), store, settings)
    assert JobPublic.model_validate(body["data"]) == public
    assert body["data"]["status"] == "partial" and body["data"]["urls_errored"] == 1
    assert body["data"]["download_url"]  # the signed link, valid when the event was made


@pytest.mark.parametrize(
    ("how", "etype", "status"),
    [("cancel", "job.cancelled", "cancelled"), ("fail", "job.failed", "failed")],
)
def test_cancelled_and_failed_jobs_send_their_event(hooked, store, settings, how, etype, status):  # type: ignore[no-untyped-def]
    job = hooked(n=4)  # one part of 4 rows: a cancel stops with what finished
    store.update_job(job.id, urls_total=10)
    if how == "cancel":
        finalize_job(job.id, settings, cancelled=True)
    else:
        fail_job(job.id, settings, "internal error: boom")
    (event,) = events_of(store, job.id)
    data = json.loads(event.payload)["data"]
    assert (event.type, data["status"]) == (etype, status)


def test_unsubscribed_events_and_jobs_without_webhook_record_nothing(hooked, store, settings):  # type: ignore[no-untyped-def]
    only_failed = hooked(events=["job.failed"])
    finalize_job(only_failed.id, settings)
    assert store.get_job(only_failed.id).status == "completed"
    assert events_of(store, only_failed.id) == []
    plain = hooked(url=None)
    fail_job(plain.id, settings, "boom")
    assert events_of(store, plain.id) == []


def test_a_second_event_of_one_type_for_one_job_is_refused(hooked, store, settings):  # type: ignore[no-untyped-def]
    job = hooked()
    fail_job(job.id, settings, "boom")
    (event,) = events_of(store, job.id)
    twin = WebhookEventRow(
        id="evt_TWIN",
        job_id=job.id,
        account_id=event.account_id,
        type=event.type,
        url=event.url,
        payload="{}",
        next_attempt_at=utcnow(),
    )
    # already final: ``finish`` changes nothing and makes no second event
    assert store.finish(job.id, "failed", event=webhooks.event_maker(settings, store)) is False
    with pytest.raises(IntegrityError), session_scope(store.url) as s:
        s.add(twin)  # and the store itself refuses a second event of the type
    assert len(events_of(store, job.id)) == 1


def test_a_broken_event_never_keeps_a_job_from_ending(make_job, alice, store, settings):  # type: ignore[no-untyped-def]
    job = make_job(alice.account, status="running", spec={**spec_with(None), "webhook": 5})
    fail_job(job.id, settings, "boom")
    assert store.get_job(job.id).status == "failed"
    assert events_of(store, job.id) == []


# --- the `webhook` field ------------------------------------------------------------------

URL1 = {"input": {"urls": ["https://example.com/"]}}


@pytest.mark.parametrize(
    ("webhook", "loc"),
    [
        ("ftp://hooks.example/x", "webhook"),
        ("not a url", "webhook"),
        ({"url": "mailto:a@b.c"}, "webhook.url"),
        ({"url": "https://"}, "webhook.url"),
        ({"url": 5}, "webhook.url"),
        ({"events": ["job.failed"]}, "webhook.url"),
        (
            {"url": "https://h.example/", "events": ["job.completed", "job.started"]},
            "webhook.events[1]",
        ),
        ({"url": "https://h.example/", "events": []}, "webhook.events"),
        ({"url": "https://h.example/", "secret": "x"}, "webhook.secret"),
        (5, "webhook"),
        ("https://h.example/" + "a" * 3000, "webhook"),
        ("http://127.0.0.1:9/hook", "webhook"),  # a private address, refused by the operator
        ({"url": "http://[::1]/hook"}, "webhook.url"),
        ({"url": "http://169.254.169.254/latest"}, "webhook.url"),
    ],
)
def test_invalid_webhook_is_422_naming_the_field(client, alice, flow_starter, webhook, loc):  # type: ignore[no-untyped-def]
    r = client.post("/v1/jobs", headers=alice.headers, json={**URL1, "webhook": webhook})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert loc in [e["loc"] for e in r.json()["errors"]], r.json()
    assert flow_starter.calls == []


@pytest.mark.parametrize(
    ("webhook", "normalized"),
    [
        ("https://hooks.example/a", {"url": "https://hooks.example/a", "events": ALL_EVENTS}),
        (
            {"url": " https://hooks.example/b "},
            {"url": "https://hooks.example/b", "events": ALL_EVENTS},
        ),
        (
            {
                "url": "http://hooks.example/c",
                "events": ["job.failed", "job.completed", "job.failed"],
            },
            {"url": "http://hooks.example/c", "events": ["job.completed", "job.failed"]},
        ),
    ],
)
def test_webhook_is_accepted_in_both_forms_and_kept_normalized(  # type: ignore[no-untyped-def]
    client, alice, store, webhook, normalized
):
    r = client.post("/v1/jobs", headers=alice.headers, json={**URL1, "webhook": webhook})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert JobSpec.model_validate(store.get_job(job_id).spec).webhook.model_dump() == normalized
    log = client.get(f"/v1/jobs/{job_id}/webhooks", headers=alice.headers)
    assert log.status_code == 200
    assert log.json() == {"job_id": job_id, "webhook": normalized, "events": [], "deliveries": []}


def test_private_webhook_addresses_are_fine_when_the_operator_allows_them(  # type: ignore[no-untyped-def]
    client, alice, monkeypatch
):
    from shoal.settings import get_settings

    monkeypatch.setenv("SHOAL_ALLOW_PRIVATE_NETWORKS", "1")
    get_settings.cache_clear()
    r = client.post(
        "/v1/jobs", headers=alice.headers, json={**URL1, "webhook": "http://127.0.0.1:9/"}
    )
    assert r.status_code == 202, r.text


def test_webhook_log_of_another_accounts_job_is_404(client, alice, bob, make_job):  # type: ignore[no-untyped-def]
    job = make_job(alice.account)
    assert client.get(f"/v1/jobs/{job.id}/webhooks", headers=alice.headers).status_code == 200
    r = client.get(f"/v1/jobs/{job.id}/webhooks", headers=bob.headers)
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    assert client.get("/v1/jobs/job_NOPE/webhooks", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/jobs/{job.id}/webhooks").status_code == 401


def test_a_job_that_could_not_start_sends_job_failed(client, alice, store, flow_starter):  # type: ignore[no-untyped-def]
    flow_starter.fail = True
    r = client.post(
        "/v1/jobs", headers=alice.headers, json={**URL1, "webhook": "https://hooks.example/x"}
    )
    assert r.status_code == 503
    (job,), _ = store.list_jobs(alice.account.id, None, 10, 0)
    (event,) = events_of(store, job.id)
    body = json.loads(event.payload)
    assert body["type"] == "job.failed" and body["data"]["status"] == "failed"
    assert "could not start the flow run" in body["data"]["error"]


def test_a_retry_job_keeps_the_webhook_and_sends_its_own_event(  # type: ignore[no-untyped-def]
    client, alice, store, settings, hooked
):
    parent = hooked(n=3, errored=frozenset({0, 2}))
    jobs.stage_inline(
        get_storage(settings),
        parent.id,
        [
            json.dumps({"url": f"https://example.com/p/{i}", "meta": None, "o": {}}).encode()
            + b"\n"
            for i in range(3)
        ],
    )
    finalize_job(parent.id, settings)
    r = client.post(f"/v1/jobs/{parent.id}/retry", headers=alice.headers)
    assert r.status_code == 202, r.text
    child = store.get_job(r.json()["id"])
    assert child.spec["webhook"] == parent.spec["webhook"]
    fail_job(child.id, settings, "boom")
    assert [e.type for e in events_of(store, child.id)] == ["job.failed"]
    assert [e.type for e in events_of(store, parent.id)] == ["job.completed"]


# --- delivery -----------------------------------------------------------------------------


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Settings for deliveries to 127.0.0.1 with short waits."""
    return settings.model_copy(
        update={
            "allow_private_networks": True,
            "webhook_backoff_s": 0.05,
            "webhook_timeout_s": 2.0,
        }
    )


def ended_job(hooked, settings: Settings, url: str) -> str:  # type: ignore[no-untyped-def]
    job = hooked(url=url)
    finalize_job(job.id, settings)
    return job.id


async def next_attempt(store: Store, settings: Settings, timeout: float = 10) -> webhooks.Attempt:
    """Claim the one due event once it is due (polled) and make one attempt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = await asyncio.to_thread(webhooks.claim_due, store, settings, 10)
        if claimed:
            (event,) = claimed
            return await webhooks.deliver(event, store, settings)
        await asyncio.sleep(0.02)
    raise AssertionError("no event became due")


async def test_fails_twice_then_delivered_and_the_log_shows_three_attempts(  # type: ignore[no-untyped-def]
    hooked, store, fast, receiver, client, alice
):
    receiver.script("/flaky", [500, 503])
    job_id = ended_job(hooked, fast, receiver.url("/flaky"))
    done = [await next_attempt(store, fast) for _ in range(3)]
    assert [(a.attempt, a.status_code, a.state) for a in done] == [
        (1, 500, "pending"),
        (2, 503, "pending"),
        (3, 200, "delivered"),
    ]
    assert await asyncio.to_thread(webhooks.claim_due, store, fast, 10) == []  # nothing more
    got = receiver.at("/flaky")
    assert len(got) == 3 and len({r.body for r in got}) == 1  # the same bytes every time
    (event,) = events_of(store, job_id)
    assert got[0].body == event.payload.encode()
    secret = store.get_account(alice.account.id).webhook_secret
    for r in got:
        assert webhooks.verify(secret, r.body, r.headers["Shoal-Signature"])
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Shoal-Event-Id"] == event.id
        assert r.headers["Shoal-Event-Type"] == "job.completed"
        assert r.headers["User-Agent"].startswith("Shoal-Webhooks/")
    body = json.loads(got[-1].body)
    assert body["data"]["id"] == job_id and body["data"]["status"] == "completed"

    log = (
        await asyncio.to_thread(client.get, f"/v1/jobs/{job_id}/webhooks", headers=alice.headers)
    ).json()
    assert [e["state"] for e in log["events"]] == ["delivered"]
    assert log["events"][0]["attempts"] == 3 and log["events"][0]["next_attempt_at"] is None
    d = log["deliveries"]
    assert [(x["attempt"], x["status_code"], x["delivered"]) for x in d] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert d[0]["error"] == "http_status: the receiver answered 500" and d[2]["error"] is None
    assert d[0]["next_retry_at"] and d[1]["next_retry_at"] and d[2]["next_retry_at"] is None
    assert all(x["event_id"] == event.id and x["url"] == receiver.url("/flaky") for x in d)
    assert d[0]["requested_at"] < d[1]["requested_at"] < d[2]["requested_at"]


async def test_no_answer_within_the_timeout_is_a_failed_attempt(hooked, store, fast, receiver):  # type: ignore[no-untyped-def]
    receiver.script("/slow", ["hang"])
    quick = fast.model_copy(update={"webhook_timeout_s": 0.5})
    ended_job(hooked, quick, receiver.url("/slow"))
    first = await next_attempt(store, quick)
    assert first.status_code is None and first.error == "timeout: no answer within 0.5 s"
    assert 450 <= first.duration_ms < 2000 and first.state == "pending"
    second = await next_attempt(store, quick)
    assert second.delivered and second.attempt == 2


async def test_redirects_are_not_followed(hooked, store, fast, receiver):  # type: ignore[no-untyped-def]
    receiver.script("/moved", ["redirect"])
    ended_job(hooked, fast, receiver.url("/moved"))
    a = await next_attempt(store, fast)
    assert a.status_code == 302 and not a.delivered and "redirects are not followed" in a.error
    assert receiver.at("/elsewhere") == []


async def test_a_private_address_is_refused_and_given_up_at_once(hooked, store, fast, receiver):  # type: ignore[no-untyped-def]
    guarded = fast.model_copy(update={"allow_private_networks": False})
    job_id = ended_job(hooked, guarded, receiver.url("/hook"))  # a job made before the rule
    a = await next_attempt(store, guarded)
    assert a.state == "gave_up" and a.error.startswith("blocked: ") and a.next_attempt_at is None
    assert receiver.received == []
    (event,) = events_of(store, job_id)
    assert event.state == "gave_up" and event.next_attempt_at is None


async def test_a_receiver_still_failing_at_the_end_of_the_window_is_given_up(  # type: ignore[no-untyped-def]
    hooked, store, fast, receiver
):
    receiver.script("/down", [500] * 10)
    short = fast.model_copy(update={"webhook_retry_for_s": 0.3, "webhook_backoff_s": 0.1})
    job_id = ended_job(hooked, short, receiver.url("/down"))
    states = []
    while not states or states[-1] == "pending":
        states.append((await next_attempt(store, short)).state)
    assert states[-1] == "gave_up" and 2 <= len(states) <= 4
    assert len(receiver.at("/down")) == len(states)
    assert [d.attempt for d in store.webhook_log(job_id)[1]] == list(range(1, len(states) + 1))


async def test_an_unreachable_receiver_is_retried(hooked, store, fast):  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ended_job(hooked, fast, f"http://127.0.0.1:{port}/hook")
    a = await next_attempt(store, fast)
    assert a.error.startswith("connect: ") and a.state == "pending" and a.status_code is None


async def test_each_attempt_is_signed_with_the_secret_of_its_time(  # type: ignore[no-untyped-def]
    hooked, store, fast, receiver, alice
):
    receiver.script("/rot", [500])
    ended_job(hooked, fast, receiver.url("/rot"))
    old = store.get_account(alice.account.id).webhook_secret
    await next_attempt(store, fast)
    store.set_webhook_secret(alice.account.id, "whsec_rotated")
    await next_attempt(store, fast)
    first, second = receiver.at("/rot")
    assert webhooks.verify(old, first.body, first.headers["Shoal-Signature"])
    assert webhooks.verify("whsec_rotated", second.body, second.headers["Shoal-Signature"])
    assert not webhooks.verify(old, second.body, second.headers["Shoal-Signature"])


def test_one_event_is_claimed_by_one_dispatcher_and_due_again_after_its_lease(  # type: ignore[no-untyped-def]
    hooked, store, settings
):
    job = hooked()
    fail_job(job.id, settings, "boom")
    (event,) = events_of(store, job.id)
    barrier = threading.Barrier(4)
    won: list[str] = []

    def claim() -> None:
        barrier.wait()
        won.extend(e.id for e in webhooks.claim_due(store, settings, 10))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [event.id]
    assert webhooks.claim_due(store, settings, 10) == []
    # the worker died during the attempt: once the lease ends, the event is due again
    lease_end = store.get_webhook_event(event.id).next_attempt_at
    later = lease_end + timedelta(seconds=1)
    (again,) = store.claim_webhook_events(later, later + timedelta(seconds=40), 10)
    assert again.id == event.id and again.attempts == 0


def test_racing_dispatchers_claim_each_due_event_exactly_once(  # type: ignore[no-untyped-def]
    hooked, store, settings
):
    """The batch claim (one transaction per dispatcher pass) re-checks each event: six due
    events, four dispatchers taking up to four each, every event taken once."""
    for _ in range(6):
        fail_job(hooked().id, settings, "boom")
    barrier = threading.Barrier(4)
    won: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        got = [e.id for e in webhooks.claim_due(store, settings, 4)]
        with lock:
            won.extend(got)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == len(set(won))  # nobody took an event twice
    assert len(won) + len(webhooks.claim_due(store, settings, 10)) == 6
    assert webhooks.claim_due(store, settings, 10) == []
