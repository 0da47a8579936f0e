"""``GET /v1/health`` against the session's Prefect test server: ``200`` only when a job posted
now would start (store, Prefect and every deployment jobs start on), else ``503`` naming what is
missing; and ``POST /v1/jobs`` names the same cause when it cannot start a job."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from shoal import __version__
from shoal.settings import Settings, deployment_names, get_settings
from shoal.store import get_store
from tests.net import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def settings(shoal_env: Callable[[str, str], None]) -> Settings:
    """Settings whose deployments are this test's own (none exists yet)."""
    shoal_env("SHOAL_DEPLOYMENT_PREFIX", f"health-{uuid.uuid4().hex[:8]}")
    return get_settings()


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app

    transport = httpx.ASGITransport(app=create_app())  # no lifespan: no warm-up
    async with httpx.AsyncClient(transport=transport, base_url="http://shoal.test") as client:
        yield client


async def deploy(*names: str) -> None:
    """Deployments (``flow/name``) without a work pool: enough for the API to find them."""
    async with get_client() as client:
        for full in names:
            flow, name = full.split("/", 1)
            flow_id = await client.create_flow_from_name(flow)
            await client.create_deployment(flow_id=flow_id, name=name)


def problem(r: httpx.Response) -> str:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 503 and body["title"] == "Not ready"
    return str(body["detail"])


async def test_ready_only_once_every_deployment_exists(
    settings: Settings, api: httpx.AsyncClient
) -> None:
    names = deployment_names(settings)
    detail = problem(await api.get("/v1/health"))
    assert all(n in detail for n in names.values()), detail
    assert "is a worker serving them?" in detail

    await deploy(names["normal"])
    detail = problem(await api.get("/v1/health"))
    assert names["high"] in detail and names["low"] in detail, detail
    assert names["normal"] not in detail, detail

    await deploy(names["high"], names["low"])
    r = await api.get("/v1/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "version": __version__}


async def test_a_paused_deployment_is_not_ready(settings: Settings, api: httpx.AsyncClient) -> None:
    """The embedded worker pauses its deployments when it stops: runs would only wait."""
    names = deployment_names(settings)
    await deploy(*names.values())
    async with get_client() as client:
        low = await client.read_deployment_by_name(names["low"])
        await client.pause_deployment(low.id)
    detail = problem(await api.get("/v1/health"))
    assert f"deployment {names['low']} paused" in detail, detail


async def test_an_unreachable_prefect_is_named_within_the_timeout(
    settings: Settings, api: httpx.AsyncClient
) -> None:
    await deploy(*deployment_names(settings).values())
    nowhere = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: nowhere}):
        started = time.monotonic()
        detail = problem(await api.get("/v1/health"))
        took = time.monotonic() - started
    assert f"the scheduler (Prefect) at {nowhere} is unreachable" in detail, detail
    assert took < 3, took
    assert (await api.get("/v1/health")).status_code == 200  # and back


async def test_a_job_posted_without_its_deployment_names_it(
    settings: Settings, api: httpx.AsyncClient
) -> None:
    store = get_store(settings)
    account, _ = store.get_or_create_account("health")
    key = store.create_key(account.id)
    r = await api.post(
        "/v1/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"input": {"urls": ["http://127.0.0.1:9/"]}},
    )
    assert r.status_code == 503, r.text
    name = deployment_names(settings)["normal"]
    assert r.json()["detail"] == f"deployment {name} not found: is a worker serving it?"
