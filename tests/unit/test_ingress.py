"""What reaches the API before a route runs (``api.ingress``): the key before the body, bounded
bodies, Content-Encoding, the per-account rate limit; and the Prefect gate behind the routes."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.prefect_access import PrefectGate, scheduler_errors
from api.ratelimit import RateLimiter
from shoal.settings import get_settings
from shoal.store import JobRow
from tests.unit.test_api import assert_problem, urls
from tests.unit.test_retry import finished  # noqa: F401 - the fixture


def _env(monkeypatch, **env: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


@dataclass
class Asgi:
    """One request straight through the ASGI app, counting what it reads of the body."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reads: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str, path: str, headers: dict[str, str], chunks: list[bytes], *, then: str = "end"
) -> Asgi:
    """``chunks`` as the body (``more_body`` until the last); after them the client waits for
    the answer (``then="end"``), leaves before the body ended (``"disconnect"``) or right after
    it (``"leave"``)."""
    from api.app import create_app

    app = create_app()
    out = Asgi()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if out.reads < len(chunks):
            out.reads += 1
            more = out.reads < len(chunks) or then == "disconnect"
            return {"type": "http.request", "body": chunks[out.reads - 1], "more_body": more}
        if then == "end":  # the client waits for its answer
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out.status = start["status"]
    out.headers = {k.decode(): v.decode() for k, v in start["headers"]}
    out.body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return out


JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


def _problem(r: Asgi, status: int, loc: str | None = None) -> dict[str, Any]:
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    if loc is not None:
        assert loc in [e["loc"] for e in body.get("errors", [])], body
    return body


# --- the key before the body -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/uploads", "/v1/jobs/job_x/retry"])
@pytest.mark.parametrize("auth", [None, "Bearer sk_not-a-real-key"])
def test_a_body_without_a_valid_key_is_401_before_a_byte_is_read(settings, path, auth):
    headers = {**JSON, "content-length": "300000000"}
    if auth:
        headers["authorization"] = auth
    r = call("POST", path, headers, [b"x" * 65536] * 3)
    _problem(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    assert r.reads == 0  # nothing of the body was received


def test_chunked_body_without_a_key_is_401_unread(settings):
    r = call("POST", "/v1/jobs", {**JSON, "transfer-encoding": "chunked"}, [b"{"] * 5)
    _problem(r, 401)
    assert r.reads == 0


# --- bounded bodies ----------------------------------------------------------------------------


def test_content_length_over_the_json_limit_is_413_at_once(settings, alice, monkeypatch):
    _env(monkeypatch, SHOAL_MAX_JSON_BODY_BYTES="1000")
    headers = {**JSON, **alice.headers, "content-length": "1001"}
    r = call("POST", "/v1/jobs", headers, [b"x" * 1001])
    assert "1000" in _problem(r, 413, "body")["detail"]
    assert r.reads == 0


def test_chunked_json_body_is_cut_at_the_limit(settings, alice, flow_starter, monkeypatch):
    _env(monkeypatch, SHOAL_MAX_JSON_BODY_BYTES="1000")
    headers = {**JSON, **alice.headers, "transfer-encoding": "chunked"}
    r = call("POST", "/v1/jobs", headers, [b" " * 400] * 100)
    _problem(r, 413, "body")
    assert r.reads == 3  # 1,200 bytes: the third chunk crossed the limit, the rest stayed unread
    assert flow_starter.calls == []
    # under the limit, the same way in: accepted
    body = json.dumps({"input": {"urls": urls(3)}}).encode()
    assert len(body) < 1000
    ok = call("POST", "/v1/jobs", headers, [body[:50], body[50:]])
    assert ok.status == 202, ok.body


def test_upload_body_is_cut_at_the_upload_limit(settings, alice, monkeypatch):
    _env(monkeypatch, SHOAL_MAX_UPLOAD_BYTES="1000")
    headers = {**NDJSON, **alice.headers, "transfer-encoding": "chunked"}
    line = b'"https://example.com/p"\n' * 1000
    r = call("POST", "/v1/uploads", headers, [line] * 100)
    _problem(r, 413)
    assert r.reads < 100


def test_a_million_url_inline_job_fits_the_json_limit(settings, alice, flow_starter, monkeypatch):
    """The default JSON limit holds 1,000,000 inline URLs of 90 characters."""
    cfg = get_settings()
    url = (
        "https://www.example-shop.com/catalog/products/category/item-{:07d}?ref=catalog&page=1&s=1"
    )
    one = json.dumps(url.format(0))
    assert len(url.format(0)) == 90
    size = len('{"input": {"urls": []}}') + 1_000_000 * (len(one) + 2)
    assert size <= cfg.max_json_body_bytes
    # and a body at the limit goes through to the route (here: 422 for too many inline URLs,
    # the job's own limit, not 413)
    _env(monkeypatch, SHOAL_MAX_INLINE_URLS="1000")
    body = json.dumps({"input": {"urls": [url.format(i) for i in range(20_000)]}}).encode()
    headers = {**JSON, **alice.headers, "content-length": str(len(body))}
    r = call("POST", "/v1/jobs", headers, [body[i : i + 65536] for i in range(0, len(body), 65536)])
    _problem(r, 422, "input.urls")


# --- Content-Encoding ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_json_body_with_content_encoding_is_415(client, alice, encoding):
    body = json.dumps({"input": {"urls": urls(1)}}).encode()
    r = client.post(
        "/v1/jobs",
        headers={**alice.headers, **JSON, "Content-Encoding": encoding},
        content=gzip.compress(body) if encoding == "gzip" else body,
    )
    assert_problem(r, 415, "Content-Encoding")


def test_an_upload_sent_as_gzip_that_is_not_gzip_is_400_naming_the_body(client, alice, store):
    r = client.post(
        "/v1/uploads",
        headers={**alice.headers, **NDJSON, "Content-Encoding": "gzip"},
        content=b'"https://example.com/p/1"\n',
    )
    assert_problem(r, 400, "body")
    ok = client.post(
        "/v1/uploads",
        headers={**alice.headers, **NDJSON, "Content-Encoding": "gzip"},
        content=gzip.compress(b'"https://example.com/p/1"\n'),
    )
    assert ok.status_code == 201 and ok.json()["urls_valid"] == 1


def test_a_form_sent_with_content_encoding_is_415_not_read_as_plain(client, alice, store):
    """The coding of a request body is the whole form's; a form declared gzip was read as if
    the header were absent (a plain form went through, a gzipped one failed as garbage)."""
    r = client.post(
        "/v1/uploads",
        headers={**alice.headers, "Content-Encoding": "gzip"},
        files={"file": ("urls.ndjson", b'"https://example.com/p/1"\n')},
    )
    assert_problem(r, 415, "Content-Encoding")
    ok = client.post(
        "/v1/uploads",
        headers=alice.headers,
        files={"file": ("urls.ndjson.gz", gzip.compress(b'"https://example.com/p/1"\n'))},
    )
    assert ok.status_code == 201 and ok.json()["urls_valid"] == 1


# --- an upload whose client leaves -----------------------------------------------------------


@pytest.mark.parametrize("then", ["disconnect", "leave"])
def test_decompression_stops_when_the_client_leaves(settings, alice, monkeypatch, then):
    """A small gzip body that inflates to 1 GiB, then the client is gone: before the body's
    end, or right after it (the pipe then holds the whole bomb). Only the client leaving may
    stop it here (ratio and line limits off): the route sees the disconnect while the thread
    is still decompressing and stops it (a 400 nobody reads), instead of inflating the whole
    GiB and answering after it."""
    _env(monkeypatch, SHOAL_MAX_UPLOAD_RATIO="100000", SHOAL_MAX_UPLOAD_LINES="1000000000")
    bomb = gzip.compress(b"a" * (16 << 20), 9) * 64  # 64 members of 16 MiB: ~1 MB for 1 GiB
    headers = {**NDJSON, **alice.headers, "content-encoding": "gzip"}
    r = call("POST", "/v1/uploads", headers, [bomb], then=then)
    assert "went away" in _problem(r, 400)["detail"]
    root = settings.data_dir / "results" / "uploads"
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


# --- rate limit --------------------------------------------------------------------------------


def test_rate_limiter_refills_and_says_when():
    now = [0.0]
    lim = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [lim.take("a") for _ in range(4)] == [0, 0, 0, 1]
    assert lim.take("b") == 0  # its own bucket
    now[0] += 0.5  # one token back
    assert lim.take("a") == 0 and lim.take("a") == 1
    slow = RateLimiter(0.1, 1, clock=lambda: now[0])
    assert slow.take("a") == 0 and slow.take("a") == 10


def test_rate_limiter_map_is_bounded():
    now = [0.0]
    lim = RateLimiter(1.0, 2, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        lim.take(f"k{i}")
    assert len(lim._buckets) <= 100
    assert lim.take("k999") == 0 and lim.take("k999") == 1  # the most recent one is kept


def test_one_account_over_its_rate_is_429_the_others_are_not(client, alice, bob, monkeypatch):
    _env(monkeypatch, SHOAL_RATE_LIMIT_PER_S="0.01", SHOAL_RATE_LIMIT_BURST="3")
    answers = [client.get("/v1/jobs", headers=alice.headers).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    r = client.get("/v1/jobs", headers=alice.headers)
    body = assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    assert "per second" in body["detail"]
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200


def test_requests_without_a_valid_key_share_their_address_bucket(client, alice, monkeypatch):
    _env(monkeypatch, SHOAL_RATE_LIMIT_PER_S="0.01", SHOAL_RATE_LIMIT_BURST="2")
    bad = {"Authorization": "Bearer sk_nope"}
    assert [client.get("/v1/jobs", headers=bad).status_code for _ in range(2)] == [401, 401]
    assert_problem(client.get("/v1/jobs"), 429)  # no key: the same address
    assert_problem(client.get("/v1/health"), 429)  # health too: it may ask Prefect
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200


def test_a_retry_flood_is_429_while_another_account_creates_and_retries(
    client,
    alice,
    bob,
    store,
    flow_starter,
    finished,  # noqa: F811 - test_retry's fixture
    monkeypatch,
):
    _env(monkeypatch, SHOAL_RATE_LIMIT_PER_S="0.01", SHOAL_RATE_LIMIT_BURST="5")
    mine = finished({1, 2})
    theirs = finished({3}, account=bob.account)
    codes = [
        client.post(f"/v1/jobs/{mine.id}/retry", headers=alice.headers).status_code
        for _ in range(40)
    ]
    assert codes[:5] == [202] * 5 and set(codes[5:]) == {429}
    created = client.post("/v1/jobs", headers=bob.headers, json={"input": {"urls": urls(2)}})
    retried = client.post(f"/v1/jobs/{theirs.id}/retry", headers=bob.headers)
    assert created.status_code == 202 and retried.status_code == 202
    assert len(flow_starter.calls) == 7  # 5 of the flood, bob's 2: nothing else reached Prefect
    for caller in (alice, bob):
        rows, _ = store.list_jobs(caller.account.id, None, 100, 0)
        assert not [r.id for r in rows if r.status == "failed"]


# --- the Prefect gate --------------------------------------------------------------------------


def _job(account_id: str, n: int) -> JobRow:
    return JobRow(id=f"job_{account_id}{n}", account_id=account_id, priority="normal")


def test_one_accounts_burst_of_starts_cannot_hold_prefect_from_another(settings):
    async def scenario() -> tuple[list[str], list[str]]:
        release = asyncio.Event()
        entered: list[str] = []

        async def start(job: JobRow, _settings: Any) -> str:
            entered.append(job.account_id)
            if job.account_id == "a":
                await release.wait()  # Prefect slow for this flood
            return f"run-{job.id}"

        gated = scheduler_errors(start)
        reached: list[int] = []
        all_in = asyncio.Event()

        async def one(i: int) -> str:
            reached.append(i)
            if len(reached) == 10:
                all_in.set()
            return await gated(_job("a", i), settings)  # runs until it waits, then yields

        flood = [asyncio.create_task(one(i)) for i in range(10)]
        await all_in.wait()  # every call of the flood is in Prefect or waiting for its turn
        other = await gated(_job("b", 0), settings)  # goes through while the flood waits
        seen = list(entered)
        release.set()
        done = await asyncio.gather(*flood)
        assert other == "run-job_b0"
        return seen, done

    seen, done = asyncio.run(scenario())
    per_account = PrefectGate(settings.prefect_calls).per_account
    assert seen.count("a") == per_account == 2  # the rest of the flood queued behind itself
    assert "b" in seen
    assert done == [f"run-job_a{i}" for i in range(10)]  # and every one of it started in turn


# --- the served document ---------------------------------------------------------------------


def test_openapi_lists_413_415_and_429(client):
    paths = client.get("/v1/openapi.json").json()["paths"]
    for path in ("/v1/jobs", "/v1/uploads"):
        codes = paths[path]["post"]["responses"]
        assert {"413", "415", "429"} <= codes.keys(), (path, codes.keys())
    for path, op in (("/v1/jobs", "get"), ("/v1/health", "get"), ("/v1/jobs/{job_id}", "delete")):
        assert "429" in paths[path][op]["responses"], path
