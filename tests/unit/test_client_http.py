"""The client's HTTP layer against a real HTTP server on 127.0.0.1 that answers from a script:
problem details become ``ShoalError`` with their fields, ``429``/``503`` are retried after
``Retry-After`` (or a backoff) with the same ``Idempotency-Key``, other errors are not retried,
an unreachable API is a ``ShoalError`` too, and ``wait`` gives up at its deadline."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shoal.client import AsyncClient, Client, Job, ShoalError
from tests.net import free_port

JOB = {
    "id": "job_1",
    "name": None,
    "status": "running",
    "urls_total": 10,
    "urls_done": 3,
    "urls_errored": 0,
    "progress": {"percentage": 30.0},
    "credits_used": 3,
    "eta_s": 5,
    "priority": "normal",
    "concurrency": 4,
    "created_at": "2026-12-05T10:00:00Z",
    "started_at": "2026-12-05T10:00:01Z",
    "completed_at": None,
    "cancel_requested_at": None,
    "result_available": False,
    "download_url": None,
    "download_url_expires_at": None,
    "download_parts": None,
    "parent_job_id": None,
    "flow_run_id": None,
    "error": None,
}
CREATED = {k: JOB[k] for k in ("id", "name", "status", "urls_total", "eta_s", "created_at")}


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def problem(status: int, title: str, headers: dict[str, str] | None = None, **extra: Any) -> Answer:
    body = {"type": "about:blank", "title": title, "status": status, **extra}
    return Answer(status, body, headers or {})


class Scripted:
    """Answers each request with the next scripted answer (the last one repeats); records the
    method, path and headers of every request, and its body."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                scripted.bodies.append(self.rfile.read(length))
                scripted.seen.append((self.command, self.path, dict(self.headers.items())))
                a = scripted.script.pop(0) if len(scripted.script) > 1 else scripted.script[0]
                body = json.dumps(a.body).encode()
                self.send_response(a.status)
                kind = "application/problem+json" if a.status >= 400 else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for k, v in a.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PATCH = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def scripted() -> Iterator[Scripted]:
    s = Scripted()
    s.thread.start()
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()


@pytest.fixture
def api() -> Iterator[Scripted]:
    with scripted() as s:
        yield s


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr("shoal.client._http.time.sleep", slept.append)
    return slept


def test_a_422_carries_each_field(api: Scripted) -> None:
    api.script = [
        problem(
            422,
            "Invalid input",
            detail="the request has invalid fields",
            errors=[{"loc": "defaults.extract.price", "msg": "Input should be 'string', ..."}],
        )
    ]
    with Client(api.url, "k") as c, pytest.raises(ShoalError) as caught:
        c.submit(["https://example.com/"], extract={"price": "money"})
    e = caught.value
    assert (e.status, e.title, e.detail) == (422, "Invalid input", "the request has invalid fields")
    assert [(f.loc, f.msg) for f in e.errors] == [
        ("defaults.extract.price", "Input should be 'string', ...")
    ]
    assert "defaults.extract.price" in str(e)
    assert len(api.seen) == 1  # a 422 is not asked again
    assert api.seen[0][2]["Authorization"] == "Bearer k"


def test_429_is_retried_after_retry_after_with_the_same_idempotency_key(
    api: Scripted, waits: list[float]
) -> None:
    api.script = [
        problem(429, "Too many requests", headers={"Retry-After": "7"}),
        problem(503, "Not ready"),  # no Retry-After: the backoff, doubled from the last wait
        Answer(202, CREATED),
    ]
    with Client(api.url, "k") as c:
        job = c.submit(upload_id="upl_1")
    assert job.id == "job_1"
    assert waits == [7.0, 14.0]
    keys = {h["Idempotency-Key"] for _, _, h in api.seen}
    assert len(api.seen) == 3 and len(keys) == 1 and keys != {""}


def test_retries_are_bounded_and_then_the_problem_is_raised(
    api: Scripted, waits: list[float]
) -> None:
    api.script = [problem(503, "Not ready", detail="prefect: down", headers={"Retry-After": "1"})]
    with Client(api.url, "k", retries=2) as c, pytest.raises(ShoalError) as caught:
        c.get("job_1")
    assert (caught.value.status, caught.value.detail) == (503, "prefect: down")
    assert len(api.seen) == 3 and waits == [1.0, 1.0]


def test_a_500_is_not_retried(api: Scripted, waits: list[float]) -> None:
    api.script = [problem(500, "Internal error")]
    with Client(api.url, "k") as c, pytest.raises(ShoalError) as caught:
        c.get("job_1")
    assert caught.value.status == 500 and len(api.seen) == 1 and waits == []


def test_a_body_that_is_not_problem_details_still_says_the_status(api: Scripted) -> None:
    api.script = [Answer(502, "<html>bad gateway</html>")]
    with Client(api.url, "k", retries=0) as c, pytest.raises(ShoalError) as caught:
        c.get("job_1")
    assert caught.value.status == 502 and "bad gateway" in caught.value.detail


def test_an_api_nobody_listens_on_is_a_shoal_error(waits: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "k", retries=1) as c, pytest.raises(ShoalError) as caught:
        c.get("job_1")
    assert caught.value.status is None and url in caught.value.detail
    assert len(waits) == 1  # one polite retry of the refused connection


def test_wait_reports_progress_and_gives_up_at_its_deadline(api: Scripted) -> None:
    api.script = [Answer(200, JOB)]
    seen: list[int] = []
    with Client(api.url, "k") as c, pytest.raises(TimeoutError, match="still running"):
        c.wait("job_1", on_progress=lambda j: seen.append(j.urls_done), timeout=0.5, poll=0.05)
    assert len(seen) >= 2 and set(seen) == {3}


def test_wait_returns_the_final_job(api: Scripted, waits: list[float]) -> None:
    done = {**JOB, "status": "completed", "urls_done": 10, "eta_s": 0}
    api.script = [Answer(200, JOB), Answer(200, JOB), Answer(200, done)]
    with Client(api.url, "k") as c:
        job = c.wait("job_1", poll=0.5, max_poll=5)
    assert job.status == "completed" and job.final
    assert waits == [0.5, 0.75]  # the counters did not move: the interval grew


def test_env_names_the_api_and_the_key(api: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_URL", api.url + "/v1/")
    monkeypatch.setenv("SHOAL_API_KEY", "from-env")
    api.script = [Answer(200, JOB)]
    with Client() as c:
        assert c.get("job_1").urls_done == 3
    assert api.seen[0][1] == "/v1/jobs/job_1"
    assert api.seen[0][2]["Authorization"] == "Bearer from-env"


def test_no_key_at_all_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_API_KEY", raising=False)
    with pytest.raises(ShoalError, match="SHOAL_API_KEY"):
        Client("http://127.0.0.1:9")


def test_extra_fields_of_a_newer_server_are_kept(api: Scripted) -> None:
    api.script = [Answer(200, {**JOB, "shiny_new": {"a": 1}})]
    with Client(api.url, "k") as c:
        job = c.get("job_1")
    assert job.model_dump()["shiny_new"] == {"a": 1}


async def test_the_async_client_retries_and_maps_errors_alike(
    api: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("shoal.client._http.asyncio.sleep", record)
    api.script = [
        problem(429, "Too many requests", headers={"Retry-After": "3"}),
        Answer(202, CREATED),
        problem(404, "Not found", detail="no job job_2"),
    ]
    async with AsyncClient(api.url, "k") as c:
        job = await c.submit(s3_uri="s3://bucket/urls.csv", extract={"p": "number"})
        assert job.id == "job_1" and slept == [3.0]
        with pytest.raises(ShoalError) as caught:
            await c.get("job_2")
    assert (caught.value.status, caught.value.detail) == (404, "no job job_2")
    keys = {h["Idempotency-Key"] for m, _, h in api.seen if m == "POST"}
    assert len(keys) == 1


async def test_the_async_wait_awaits_its_progress_callback(
    api: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_sleep(seconds: float) -> None:
        pass

    monkeypatch.setattr("shoal.client._http.asyncio.sleep", no_sleep)
    done = {**JOB, "status": "completed", "urls_done": 10}
    api.script = [Answer(200, JOB), Answer(200, done)]
    seen: list[str] = []

    async def progress(job: Job) -> None:
        seen.append(job.status)

    async with AsyncClient(api.url, "k") as c:
        assert (await c.wait("job_1", on_progress=progress)).status == "completed"
    assert seen == ["running", "completed"]
