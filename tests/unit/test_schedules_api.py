"""``/v1/schedules`` against a real Prefect server: each schedule is a schedule of the
``scrape-job`` deployment of its priority, with ``{"schedule_id"}`` parameters and a slug; a
pause in Prefect shows as ``paused``; registering the deployments again (every worker start)
keeps them, and the store re-creates any Prefect lost. Flow runs are not started here (the
end-to-end test runs them): ``POST /v1/jobs``' starter is the conftest's recorder."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.runner import Runner
from prefect.testing.utilities import prefect_test_harness

from deployments import prefect_schedules
from shoal.settings import PRIORITIES, deployment_names

DEPLOYMENTS = [f"embedded-{p}" for p in PRIORITIES]
URLS = ["https://example.com/p/1", "https://example.com/p/2"]
JOB = {"urls": URLS, "defaults": {"extract": {"sku": "string", "price": "number"}}}


async def _register() -> None:
    """What the embedded worker does at start: register its deployments (``deployments/serve``)."""
    from flows.scrape_job import scrape_job

    runner = Runner(pause_on_shutdown=True)
    for name in DEPLOYMENTS:
        await runner.aadd_flow(scrape_job, name=name)


@pytest.fixture(scope="module")
def prefect() -> Iterator[None]:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        asyncio.run(_register())
        yield


@pytest.fixture
def api(prefect, client, flow_starter, monkeypatch):  # type: ignore[no-untyped-def]
    import api.routers.schedules

    monkeypatch.setattr(api.routers.schedules, "start_flow_run", flow_starter)
    yield client
    for row in _all_rows(client):  # each test starts with no schedule on the deployments
        asyncio.run(prefect_schedules.remove_schedule(row, _settings()))


def _settings():  # type: ignore[no-untyped-def]
    from shoal.settings import get_settings

    return get_settings()


def _all_rows(client: Any) -> list[str]:
    from shoal.store import get_store

    return [r.id for r in get_store(_settings()).all_schedules()]


async def _prefect_schedules(priority: str = "normal") -> list[Any]:
    async with get_client() as c:
        dep = await c.read_deployment_by_name(deployment_names(_settings())[priority])
        return [s for s in dep.schedules if (s.slug or "").startswith("shoal-")]


def _create(client: Any, who: Any, **body: Any) -> dict[str, Any]:
    base = {"name": "nightly", "interval_s": 3600, "job": JOB}
    r = client.post("/v1/schedules", json={**base, **body}, headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_list_change_delete(api, alice) -> None:  # type: ignore[no-untyped-def]
    made = _create(
        api,
        alice,
        cron="0 2 * * *",
        interval_s=None,
        timezone="Europe/Berlin",
        compare={"key": "sku", "fields": ["price"]},
        conditional=True,
        quality={"min_rows": 1, "max_null_rate": {"price": 0.02}},
    )
    assert made["id"].startswith("sch_") and made["paused"] is False
    assert (made["runs"], made["skipped_runs"], made["last_job_id"]) == (0, 0, None)
    assert len(made["next_runs"]) == 5 and all(t.endswith("Z") for t in made["next_runs"])
    assert made["compare"] == {"key": "sku", "fields": ["price"], "previous_job_id": None}
    assert made["job"] == JOB and made["timezone"] == "Europe/Berlin"
    (ours,) = asyncio.run(_prefect_schedules())
    assert ours.slug == f"shoal-{made['id']}" and ours.parameters == {"schedule_id": made["id"]}
    assert ours.active is True
    assert (ours.schedule.cron, ours.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")

    assert api.get(f"/v1/schedules/{made['id']}", headers=alice.headers).json() == made
    second = _create(api, alice, name="hourly")
    page = api.get("/v1/schedules?limit=1", headers=alice.headers).json()
    assert (page["total"], [s["id"] for s in page["schedules"]]) == (2, [second["id"]])
    page = api.get("/v1/schedules?limit=1&offset=1", headers=alice.headers).json()
    assert [s["id"] for s in page["schedules"]] == [made["id"]]

    r = api.patch(f"/v1/schedules/{made['id']}", json={"interval_s": 120}, headers=alice.headers)
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["cron"], changed["timezone"], changed["interval_s"]) == (None, None, 120)
    assert changed["compare"] == made["compare"] and changed["name"] == "nightly"
    ours = next(s for s in asyncio.run(_prefect_schedules()) if s.slug == f"shoal-{made['id']}")
    assert ours.schedule.interval.total_seconds() == 120

    r = api.patch(
        f"/v1/schedules/{made['id']}",
        json={"job": {**JOB, "priority": "high"}},
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    assert [s.parameters for s in asyncio.run(_prefect_schedules("high"))] == [
        {"schedule_id": made["id"]}
    ]
    assert f"shoal-{made['id']}" not in {s.slug for s in asyncio.run(_prefect_schedules())}

    assert api.delete(f"/v1/schedules/{made['id']}", headers=alice.headers).status_code == 204
    assert api.get(f"/v1/schedules/{made['id']}", headers=alice.headers).status_code == 404
    assert asyncio.run(_prefect_schedules("high")) == []
    assert api.get("/v1/schedules", headers=alice.headers).json()["total"] == 1


def test_another_accounts_schedule_is_not_found(api, alice, bob) -> None:  # type: ignore[no-untyped-def]
    made = _create(api, alice)
    path = f"/v1/schedules/{made['id']}"
    assert api.get(path, headers=bob.headers).status_code == 404
    assert api.patch(path, json={"paused": True}, headers=bob.headers).status_code == 404
    assert api.delete(path, headers=bob.headers).status_code == 404
    assert api.post(f"{path}/run", headers=bob.headers).status_code == 404
    assert api.get("/v1/schedules", headers=bob.headers).json()["total"] == 0
    assert api.get(path, headers=alice.headers).json()["paused"] is False
    assert api.get("/v1/schedules/sch_%00", headers=alice.headers).status_code == 404
    assert api.get("/v1/schedules").status_code == 401


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"cron": "0 2 * *", "interval_s": None}, "cron"),
        ({"cron": "0 25 * * *", "interval_s": None}, "cron"),
        ({"cron": "0 2 * * *"}, "interval_s"),
        ({"interval_s": None}, "cron"),
        ({"interval_s": 59}, "interval_s"),
        ({"cron": "0 2 * * *", "interval_s": None, "timezone": "Europe/Nowhere"}, "timezone"),
        ({"job": {"urls": ["not a url"]}}, "job.urls[0]"),
        ({"job": {"input": {"upload_id": "upl_NONE"}}}, "job.input.upload_id"),
        ({"job": {**JOB, "colour": "red"}}, "job.colour"),
        ({"compare": {"key": "name"}}, "compare.key"),
        ({"compare": {"fields": ["price", "stock"]}}, "compare.fields[1]"),
        ({"quality": {"max_null_rate": {"stock": 0.1}}}, "quality.max_null_rate.stock"),
        ({"quality": {"max_error_rate": 1.5}}, "quality.max_error_rate"),
        ({"quality": {"min_rows": -1}}, "quality.min_rows"),
        ({"name": ""}, "name"),
        ({"schedule": "daily"}, "schedule"),
    ],
)
def test_an_invalid_schedule_is_422_naming_the_field(
    api, alice, body: dict[str, Any], loc: str
) -> None:  # type: ignore[no-untyped-def]
    full = {"name": "n", "interval_s": 3600, "job": JOB, **body}
    r = api.post("/v1/schedules", json=full, headers=alice.headers)
    assert r.status_code == 422, r.text
    assert loc in {e["loc"] for e in r.json()["errors"]}, r.json()
    assert asyncio.run(_prefect_schedules()) == []


def test_a_change_is_checked_as_the_whole_schedule(api, alice) -> None:  # type: ignore[no-untyped-def]
    made = _create(api, alice, compare={"key": "sku"})
    path = f"/v1/schedules/{made['id']}"
    for body, loc in [
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Europe/Berlin"}, "timezone"),
        ({"interval_s": 30}, "interval_s"),
        ({"job": {"urls": URLS}}, "compare.key"),  # the new job extracts no sku
        ({"name": None}, "name"),
    ]:
        r = api.patch(path, json=body, headers=alice.headers)
        assert r.status_code == 422 and loc in {e["loc"] for e in r.json()["errors"]}, r.text
    _create(api, alice, name="other")
    assert api.patch(path, json={"name": "other"}, headers=alice.headers).status_code == 409
    assert api.get(path, headers=alice.headers).json() == made
    r = api.patch(
        path, json={"cron": "15 3 * * 1", "timezone": "Asia/Tokyo"}, headers=alice.headers
    )
    assert (r.json()["cron"], r.json()["interval_s"]) == ("15 3 * * 1", None)


def test_a_name_is_unique_in_an_account(api, alice, bob) -> None:  # type: ignore[no-untyped-def]
    _create(api, alice)
    r = api.post(
        "/v1/schedules",
        json={"name": "nightly", "interval_s": 60, "job": JOB},
        headers=alice.headers,
    )
    assert r.status_code == 409
    _create(api, bob)  # another account's name is its own


def test_a_pause_in_prefect_shows_and_a_pause_here_goes_to_prefect(api, alice) -> None:  # type: ignore[no-untyped-def]
    made = _create(api, alice)
    path = f"/v1/schedules/{made['id']}"
    (ours,) = asyncio.run(_prefect_schedules())

    async def set_active(active: bool) -> None:  # what the UI's toggle does
        async with get_client() as c:
            await c.update_deployment_schedule(ours.deployment_id, ours.id, active=active)

    asyncio.run(set_active(False))
    got = api.get(path, headers=alice.headers).json()
    assert got["paused"] is True and got["next_runs"] == []
    listed = api.get("/v1/schedules", headers=alice.headers).json()["schedules"]
    assert listed[0]["paused"] is True
    r = api.patch(path, json={"name": "renamed"}, headers=alice.headers)  # keeps the UI's pause
    assert r.json()["paused"] is True
    assert asyncio.run(_prefect_schedules())[0].active is False

    r = api.patch(path, json={"paused": False}, headers=alice.headers)
    assert r.json()["paused"] is False and len(r.json()["next_runs"]) == 5
    assert asyncio.run(_prefect_schedules())[0].active is True
    api.patch(path, json={"paused": True}, headers=alice.headers)
    assert asyncio.run(_prefect_schedules())[0].active is False


def test_schedules_survive_a_worker_restart_and_lost_ones_come_back(api, alice) -> None:  # type: ignore[no-untyped-def]
    """A worker start registers the deployments again (``aadd_flow``, which PATCHes them with
    no schedules): Prefect keeps slugged schedules. A worker stopping pauses its deployments
    (``pause_on_shutdown``), not the schedules. One Prefect lost is put back from the store."""
    kept = _create(api, alice, name="kept")
    lost = _create(api, alice, name="lost", paused=True)

    async def restart() -> None:
        runner = Runner(pause_on_shutdown=True)
        from flows.scrape_job import scrape_job

        await runner.aadd_flow(scrape_job, name="embedded-normal")
        async with runner:  # its exit pauses the deployments it registered
            pass
        async with get_client() as c:
            dep = await c.read_deployment_by_name(deployment_names(_settings())["normal"])
            assert dep.paused is True
        await _register()  # the next start

    asyncio.run(restart())
    found = {s.slug: s.active for s in asyncio.run(_prefect_schedules())}
    assert found == {f"shoal-{kept['id']}": True, f"shoal-{lost['id']}": False}
    assert api.get(f"/v1/schedules/{kept['id']}", headers=alice.headers).json()["paused"] is False

    asyncio.run(prefect_schedules.remove_schedule(lost["id"], _settings()))

    async def stray() -> None:  # a Shoal-slugged schedule whose Shoal schedule is gone
        async with get_client() as c:
            from prefect.client.schemas.actions import DeploymentScheduleCreate
            from prefect.client.schemas.schedules import IntervalSchedule

            dep = await c.read_deployment_by_name(deployment_names(_settings())["normal"])
            await c.create_deployment_schedules(
                dep.id,
                [
                    DeploymentScheduleCreate(
                        schedule=IntervalSchedule(interval=3600),
                        parameters={"schedule_id": "sch_GONE"},
                        slug="shoal-sch_GONE",
                    )
                ],
            )

    asyncio.run(stray())
    from shoal.store import get_store

    done = asyncio.run(prefect_schedules.reconcile(_settings(), get_store(_settings())))
    assert (done.created, done.removed) == ([lost["id"]], ["sch_GONE"])
    found = {s.slug: s.active for s in asyncio.run(_prefect_schedules())}
    assert found == {f"shoal-{kept['id']}": True, f"shoal-{lost['id']}": False}
    again = asyncio.run(prefect_schedules.reconcile(_settings(), get_store(_settings())))
    assert (again.created, again.removed) == ([], [])


def test_run_now_makes_numbered_runs_compared_with_the_previous(
    api, alice, store, flow_starter
) -> None:  # type: ignore[no-untyped-def]
    made = _create(api, alice, compare={"key": "sku"}, conditional=True)
    run = f"/v1/schedules/{made['id']}/run"
    r = api.post(run, headers=alice.headers)
    assert r.status_code == 202, r.text
    first = r.json()
    assert (first["schedule_id"], first["run_number"], first["status"]) == (made["id"], 1, "queued")
    assert first["flow_run_id"] == "fake-flow-run-1"
    assert flow_starter.calls[-1].id == first["id"]
    r = api.post(run, headers=alice.headers)  # run 1 has not ended
    assert r.status_code == 409 and first["id"] in r.json()["detail"]

    store.finish(first["id"], "completed")
    second = api.post(run, headers=alice.headers).json()
    assert second["run_number"] == 2
    spec = store.get_job(second["id"]).spec
    assert spec["compare"] == {"key": "sku", "fields": None, "previous_job_id": first["id"]}
    assert spec["conditional"] is True
    got = api.get(f"/v1/schedules/{made['id']}", headers=alice.headers).json()
    assert (got["runs"], got["last_job_id"]) == (2, second["id"])

    listed = api.get(f"/v1/jobs?schedule_id={made['id']}", headers=alice.headers).json()
    assert [j["id"] for j in listed["jobs"]] == [second["id"], first["id"]]
    assert listed["total"] == 2
    assert api.get("/v1/jobs?schedule_id=sch_OTHER", headers=alice.headers).json()["total"] == 0
    other = api.post("/v1/jobs", json={"urls": URLS}, headers=alice.headers).json()
    everything = api.get("/v1/jobs", headers=alice.headers).json()
    assert {j["id"] for j in everything["jobs"]} == {first["id"], second["id"], other["id"]}
    assert api.get(f"/v1/jobs/{other['id']}", headers=alice.headers).json()["schedule_id"] is None


def test_post_jobs_compare_previous_job_id_is_the_callers_ended_job(  # type: ignore[no-untyped-def]
    api, alice, bob, make_job, store
) -> None:
    done = make_job(alice.account, status="completed")
    going = make_job(alice.account, status="running")
    removed = make_job(alice.account, status="partial")
    store.update_job(removed.id, results_removed_at=store.now())
    theirs = make_job(bob.account, status="completed")
    body = {"urls": URLS, "defaults": {"extract": {"sku": "string"}}}
    for job_id, says in [
        (going.id, "is running"),
        (removed.id, "removed"),
        (theirs.id, "no job"),
        ("job_NONE", "no job"),
    ]:
        r = api.post(
            "/v1/jobs", json={**body, "compare": {"previous_job_id": job_id}}, headers=alice.headers
        )
        assert r.status_code == 422, r.text
        (err,) = r.json()["errors"]
        assert err["loc"] == "compare.previous_job_id" and says in err["msg"]
    for extra, loc in [
        ({"compare": {"key": "price"}}, "compare.key"),
        ({"compare": {"fields": ["sku", "price"]}}, "compare.fields[1]"),
        ({"quality": {"max_null_rate": {"price": 0.5}}}, "quality.max_null_rate.price"),
    ]:
        r = api.post("/v1/jobs", json={**body, **extra}, headers=alice.headers)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == loc, r.text
    r = api.post(
        "/v1/jobs",
        json={
            **body,
            "compare": {"key": "sku", "previous_job_id": done.id},
            "quality": {"min_rows": 2},
        },
        headers=alice.headers,
    )
    assert r.status_code == 202, r.text
    spec = store.get_job(r.json()["id"]).spec
    assert spec["compare"]["previous_job_id"] == done.id and spec["quality"]["min_rows"] == 2


def test_two_puts_of_one_schedule_at_once_make_one_prefect_schedule(api, alice) -> None:  # type: ignore[no-untyped-def]
    """The API's create and a reconcile (a worker's start, the API's) both find no Prefect
    schedule and both create one: the loser's 409 makes it update the winner's instead of
    answering 503 (seen in CI: "the scheduler (Prefect) answered 409")."""
    from shoal.store import get_store

    made = _create(api, alice, name="raced")
    asyncio.run(prefect_schedules.remove_schedule(made["id"], _settings()))
    row = get_store(_settings()).get_schedule(made["id"])

    async def both() -> list[str]:
        return list(
            await asyncio.gather(
                prefect_schedules.put_schedule(row, _settings()),
                prefect_schedules.put_schedule(row, _settings()),
            )
        )

    ids = asyncio.run(both())
    ours = [s for s in asyncio.run(_prefect_schedules()) if s.slug == f"shoal-{made['id']}"]
    assert len(ours) == 1 and ids == [str(ours[0].id)] * 2
