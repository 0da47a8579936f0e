"""``deployments.launch.start_flow_run`` against the test Prefect server, reached through a loopback
proxy that answers ``503`` to the first ``create_flow_run`` requests, as Prefect's server on
SQLite does when its write collides with another ("database is locked")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import launch
from shoal import jobs
from shoal.settings import Settings, deployment_names, get_settings
from shoal.store import JobRow

PREFIX = "launch-test"
# the proxy fixture serves on the session's event loop: the tests must run on it too
pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class BusyProxy:
    """Forwards everything to Prefect, except that the first ``busy`` flow-run creations are
    answered ``503`` without reaching it. ``creates`` lists the status of each creation."""

    upstream: str
    client: httpx.AsyncClient
    busy: int = 0
    creates: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        creating = request.method == "POST" and request.path.endswith("/create_flow_run")
        if creating and self.busy > 0:
            self.busy -= 1
            self.creates.append(503)
            return web.json_response({"exception_message": "Service Unavailable"}, status=503)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = await self.client.request(
            request.method,
            self.upstream + request.path_qs.removeprefix("/api"),
            content=await request.read(),
            headers=headers,
        )
        if creating:
            self.creates.append(answer.status_code)
        return web.Response(
            body=answer.content,
            status=answer.status_code,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )


@pytest.fixture
async def proxy() -> AsyncIterator[BusyProxy]:
    upstream = PREFECT_API_URL.value()
    async with get_client() as client:  # a deployment without a work pool: runs stay Scheduled
        flow_id = await client.create_flow_from_name(PREFIX)
        name = deployment_names(_settings())["normal"].split("/", 1)[1]  # embedded-normal
        await client.create_deployment(flow_id=flow_id, name=name)
    busy = BusyProxy(upstream.rstrip("/"), httpx.AsyncClient())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", busy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    busy.url = f"http://127.0.0.1:{port}/api"
    try:
        with temporary_settings({PREFECT_API_URL: busy.url}):
            yield busy
    finally:
        await runner.cleanup()
        await busy.client.aclose()


def _settings() -> Settings:
    return get_settings().model_copy(update={"deployment_prefix": PREFIX})


def _job() -> JobRow:
    return jobs.job_row("acct_launch", "launch", "normal", {"concurrency": 1}, 1)


async def test_busy_answers_are_tried_again_and_make_one_flow_run(
    proxy: BusyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.busy = 2
    job = _job()
    with caplog.at_level(logging.WARNING, logger="deployments.launch"):
        run_id = await launch.start_flow_run(job, _settings())
    assert proxy.creates == [503, 503, 201]
    # start_flow_run, not Prefect's client (which would wait 2 s, then 4 s), tried again
    retried = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retried) == 2 and all("503" in r.getMessage() for r in retried)
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    assert run.name == f"{job.id} · launch" and run.idempotency_key == job.id
    assert run.parameters == {"job_id": job.id}
    assert {"shoal", "priority:normal", f"account:{job.account_id}"} <= set(run.tags)

    # sent again (a lost answer), the same job gets the same flow run, not a second one
    assert await launch.start_flow_run(job, _settings()) == run_id
    assert proxy.creates[-1] == 200


async def test_a_resumed_run_is_named_and_keyed_by_its_resume_number(proxy: BusyProxy) -> None:
    job = _job()
    first = await launch.start_flow_run(job, _settings())
    resumed = await launch.start_flow_run(job, _settings(), resume=1)
    assert resumed != first
    assert await launch.start_flow_run(job, _settings(), resume=1) == resumed  # once only
    async with get_client() as client:
        run = await client.read_flow_run(resumed)
    assert run.idempotency_key == f"{job.id}-resume-1"
    assert run.name == f"{job.id}-resume-1 · launch"
    assert {"shoal", "resumed", "priority:normal"} <= set(run.tags)


async def test_a_server_busy_past_the_budget_raises(
    proxy: BusyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "RETRY_BUDGET_S", 0.3)
    proxy.busy = 1_000
    with pytest.raises(launch.PrefectBusy):
        await launch.start_flow_run(_job(), _settings())
    assert len(proxy.creates) >= 2 and set(proxy.creates) == {503}


async def test_an_unknown_deployment_raises_at_once(proxy: BusyProxy) -> None:
    settings = get_settings().model_copy(update={"deployment_prefix": "no-such-flow"})
    with pytest.raises(ObjectNotFound):
        await launch.start_flow_run(_job(), settings)
    assert proxy.creates == []
