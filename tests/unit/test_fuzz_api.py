"""Schemathesis over the served OpenAPI document, against the real app and a real job store.

Every operation of ``/v1/openapi.json`` gets generated requests (data that fits the document,
and data that does not), sent in-process to the app ``create_app()`` builds, with a job store
in SQLite under ``tmp_path``. Path ids are those of real jobs (every status, with parts, outputs
and webhook deliveries) and uploads of the caller, another account's, or unknown ones, so the
job endpoints are reached past their ``404``; most requests carry a valid API key. Prefect is the
recorder ``tests/unit/conftest.py`` puts in its place. Each answer must not be a ``5xx`` and must
be what the document says: a documented status, its content type, its schema; and a request
the document calls invalid must be refused (the document is no looser than the checks).

Derandomized (the same requests each run) and bounded: ``SHOAL_FUZZ_EXAMPLES`` examples per
operation and mode (default 60: about 1,200 requests, 20-40 s). The request count is shown at
the end of the run (and recorded as the test's ``fuzz_requests`` property).
``SHOAL_FUZZ_STORES=sqlite,postgres`` also runs it on PostgreSQL, which refuses text holding NUL.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest
import schemathesis
import schemathesis.python.asgi
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shoal import downloads
from shoal.output import part_url, write_part
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import WebhookDeliveryRow, WebhookEventRow, new_id, utcnow
from shoal.store._db import session_scope

EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "60"))
#: job stores to run against (``tests/unit/conftest.py``): ``SHOAL_FUZZ_STORES=sqlite,postgres``
STORES = tuple(os.environ.get("SHOAL_FUZZ_STORES", "sqlite").split(","))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MODES = {GenerationMode.POSITIVE: EXAMPLES, GenerationMode.NEGATIVE: max(1, EXAMPLES // 2)}


@dataclass
class World:
    """What the requests may name: real ids of the caller and of another account."""

    keys: dict[str, str]
    job_ids: list[str]
    upload_ids: list[str]
    links: list[tuple[str, str, int, str]]  # job id, file name, expires, sig
    schedule_ids: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _rows(n: int, errored: set[int]) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "url": f"https://example.com/p/{i}",
            "input_index": i,
            "status": "error" if i in errored else "ok",
            "http_status": None if i in errored else 200,
            "fetched_at": utcnow(),
            "attempts": 1,
            "credits": 1,
            "meta": {"i": i},
            "data": None if i in errored else {"title": f"P{i}", "price": 1.5 * i},
        }
        if i in errored:
            row["error"] = {"code": "timeout", "message": "no answer in 30 s"}
        rows.append(row)
    return rows


@pytest.fixture
def world(client, alice, bob, make_job, store, settings, tmp_path, monkeypatch) -> World:
    # the per-account rate limit would answer most of the run 429 (tests/unit/test_ingress.py)
    monkeypatch.setenv("SHOAL_RATE_LIMIT_PER_S", "0")
    get_settings.cache_clear()
    storage = get_storage(settings)
    fields = {"title": "string", "price": "number"}
    hook = {"url": "https://hooks.example.com/in", "events": ["job.completed", "job.failed"]}
    spec = {"defaults": {}, "concurrency": 4, "output": {}, "fields": fields, "webhook": hook}
    now = utcnow()
    later = now + timedelta(hours=1)
    ended = {"started_at": now - timedelta(minutes=5), "completed_at": now}
    jobs = [
        make_job(alice.account, spec=spec),
        make_job(
            alice.account,
            status="running",
            spec=spec,
            urls_total=3,
            **ended | {"completed_at": None},
        ),
        make_job(alice.account, status="completed", spec=spec, urls_total=3, **ended),
        make_job(alice.account, status="partial", spec=spec, urls_total=3, **ended),
        make_job(alice.account, status="completed", spec=spec, urls_total=1, **ended),
        make_job(alice.account, status="failed", error="could not start", **ended),
        make_job(alice.account, status="cancelled", urls_total=3, **ended),
        make_job(alice.account, status="completed", results_removed_at=now, **ended),
        make_job(bob.account, status="completed", spec=spec, **ended),
    ]
    links = []
    for job, (n, errored) in zip(
        jobs[1:5], [(2, set()), (3, set()), (3, {1, 2}), (1, set())], strict=True
    ):
        rows = _rows(n, errored)
        write_part(storage, part_url(storage, job.id, 0), rows)
        staged = b"".join(
            orjson.dumps({"url": r["url"], "meta": r["meta"], "o": {}}) + b"\n" for r in rows
        )
        storage.write_bytes_atomic(storage.url("jobs", job.id, "input.ndjson"), staged)
        if job.status == "running":
            continue
        out = tmp_path / f"{job.id}.ndjson"
        out.write_bytes(b'{"url": "https://example.com/p/0"}\n')
        outputs = [{"name": "result.ndjson", "url": str(out), "rows": n, "size_bytes": 35}]
        store.update_job(job.id, outputs=outputs, output_expires_at=later)
        links.append((job.id, "result.ndjson", int(later.timestamp()), ""))
    links = [(j, f, e, downloads._sig(settings.secret(), j, f, e)) for j, f, e, _ in links]
    with session_scope(store.url) as s:  # a delivered event and one still retrying
        for job, state in ((jobs[2], "delivered"), (jobs[3], "pending")):
            event = WebhookEventRow(
                id=new_id("evt", 8),
                job_id=job.id,
                account_id=job.account_id,
                type="job.completed",
                url=hook["url"],
                payload="{}",
                state=state,
                attempts=1,
                next_attempt_at=later,
                created_at=now,
            )
            s.add(event)
            s.flush()
            s.add(
                WebhookDeliveryRow(
                    id=new_id("whd", 8),
                    event_id=event.id,
                    job_id=job.id,
                    event_type="job.completed",
                    attempt=1,
                    url=hook["url"],
                    requested_at=now,
                    status_code=200 if state == "delivered" else 503,
                    delivered=int(state == "delivered"),
                    error=None if state == "delivered" else "http_status: 503",
                    duration_ms=12,
                    next_retry_at=None if state == "delivered" else later,
                )
            )
    uploads = []
    for caller in (alice, bob):
        r = client.post(
            "/v1/uploads",
            headers={**caller.headers, "Content-Type": "application/x-ndjson"},
            content=b'"https://example.com/a"\n{"url": "ftp://x"}\n',
        )
        assert r.status_code == 201, r.text
        uploads.append(r.json()["id"])
    keys = {"alice": alice.key, "bob": bob.key, "unknown": "sk_not-a-real-key"}
    ids = [j.id for j in jobs] + ["job_000000000000"]
    return World(
        keys, ids, uploads + ["upl_000000000000"], links, _schedules(store, alice, bob, monkeypatch)
    )


def _schedules(store: Any, alice: Any, bob: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Schedules of both callers (and an unknown id); Prefect's schedules are recorders."""
    import api.prefect_access
    import api.routers.schedules
    from shoal.store import ScheduleRow

    async def put(row: Any, settings: Any) -> str:
        return "fake-prefect-schedule"

    async def nothing(*_: Any) -> None:
        return None

    monkeypatch.setattr(api.prefect_access, "put_schedule", put)
    monkeypatch.setattr(api.prefect_access, "remove_schedule", nothing)
    monkeypatch.setattr(api.prefect_access, "schedule_pauses", nothing)
    monkeypatch.setattr(api.routers.schedules, "start_flow_run", api.routers.jobs.start_flow_run)
    job = {"urls": ["https://example.com/a"], "defaults": {"extract": {"title": "string"}}}
    ids = []
    for caller, name in ((alice, "a1"), (alice, "a2"), (bob, "b1")):
        row = ScheduleRow(
            id=new_id("sch"), account_id=caller.account.id, name=name, interval_s=3600, job=job
        )
        ids.append(store.insert_schedule(row).id)
    return ids + ["sch_000000000000"]


def _fill(case: Any, world: World, data: st.DataObject, mode: GenerationMode) -> None:
    """Real ids in the path (mostly; not in negative data, whose path may be what is invalid),
    and a valid key (mostly)."""
    path = case.path_parameters if mode.is_positive else None
    if path is not None and "job_id" in path and data.draw(st.integers(0, 4), "id kind") > 0:
        path["job_id"] = data.draw(st.sampled_from(world.job_ids), "job_id")
    if path is not None and "schedule_id" in path and data.draw(st.integers(0, 4), "sch") > 0:
        path["schedule_id"] = data.draw(st.sampled_from(world.schedule_ids), "schedule_id")
    if path is not None and "upload_id" in path and data.draw(st.booleans(), "real upload"):
        path["upload_id"] = data.draw(st.sampled_from(world.upload_ids), "upload_id")
    if path is not None and "filename" in path and data.draw(st.booleans(), "real link"):
        job_id, name, expires, sig = data.draw(st.sampled_from(world.links), "link")
        path.update(job_id=job_id, filename=name)
        if data.draw(st.booleans(), "signed"):
            case.query = {**(case.query or {}), "expires": expires, "sig": sig}
    who = data.draw(st.sampled_from(["alice"] * 6 + ["bob", "unknown", "none"]), "caller")
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if who != "none":
        headers["Authorization"] = f"Bearer {world.keys[who]}"
    case.headers = headers


def _run(operation: Any, mode: GenerationMode, examples: int, world: World) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        _fill(case, world, data, mode)
        label = f"{mode.value} {operation.label}"
        try:
            response = case.call()
        except Exception:  # the in-process transport re-raises what answered 500
            world.requests += 1
            world.statuses[500] += 1
            world.failures.setdefault(f"{label}: raised", traceback.format_exc(limit=-6))
            return
        world.requests += 1
        world.statuses[response.status_code] += 1
        world.by_operation.setdefault(operation.label, Counter())[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup as exc:  # every check that failed, with a curl line
            world.failures.setdefault(f"{label}: {str(exc).splitlines()[0]}", str(exc)[:3000])

    try:
        fuzz()
    except Unsatisfiable:
        # nothing of the operation can be made invalid (``GET /v1/health`` has no input)
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_fuzz_the_served_openapi_document(client, world, record_property):
    from api.readiness import check_ready

    app = client.app
    app.dependency_overrides[check_ready] = lambda: None  # readiness: tests/integration
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # deletes last: a deleted schedule would leave its other operations only 404s
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) >= 14, [op.label for op in operations]
    started = time.monotonic()
    try:
        for operation in operations:
            for mode, examples in MODES.items():
                _run(operation, mode, examples, world)
    finally:
        schemathesis.python.asgi.shutdown_lifespans()  # the app's lifespan it started
    elapsed = time.monotonic() - started
    record_property("fuzz_requests", world.requests)
    # shown at the end of the run by tests/conftest.py (also from an xdist worker)
    record_property(
        "summary",
        f"fuzz: {world.requests} requests over {len(operations)} operations in "
        f"{elapsed:.1f} s; statuses {dict(sorted(world.statuses.items()))}",
    )
    assert world.requests >= len(operations) * EXAMPLES
    assert not world.failures, "\n\n".join(f"{k}\n{v}" for k, v in world.failures.items())
    # every operation on a job or an upload was reached past its 404 (the real ids were used)
    for label, seen in world.by_operation.items():
        if "{" in label:
            assert any(code < 300 or code in (409, 410) for code in seen), (label, seen)
    assert {200, 202, 404, 409, 410, 422} <= set(world.statuses), world.statuses
