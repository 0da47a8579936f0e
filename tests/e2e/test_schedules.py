"""Schedules on the real stack (``shoal up``), through HTTP only: Prefect's scheduler makes a
schedule's flow runs (with ``{"schedule_id"}``, at the times ``next_runs`` says); such a run
becomes the schedule's next numbered job, compared with the previous one; run now makes one the
same way; a run due while one goes is skipped and counted; a pause in Prefect shows; schedules
outlive a worker restart.

No test waits for a schedule's time: a flow run Prefect's scheduler made is moved to now (its
state set to ``Scheduled`` at this instant), and the worker starts it as it would at its time."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from typing import Any

import httpx

from tests.e2e.prefect_runs import (
    deployment,
    due_now,
    final_state,
    prefect_api,
    scheduled_runs,
    scheduled_runs_now,
)
from tests.e2e.stack import Stack, poll_until
from tests.sites.catalog import Site

FINAL = {"completed", "partial", "cancelled", "failed"}
SCHEMA = {"name": "string", "price": "number"}


def _create(client: httpx.Client, site: Site, name: str, **body: Any) -> dict[str, Any]:
    urls = [site.url(f"/p/{i}") for i in range(5)]
    job = {"input": {"urls": urls}, "defaults": {"extract": SCHEMA}, "concurrency": 4}
    r = client.post("/v1/schedules", json={"name": name, "interval_s": 60, "job": job, **body})
    assert r.status_code == 201, r.text
    return r.json()


def _runs(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs?schedule_id={schedule_id}").json()["jobs"]


def test_prefects_scheduler_and_run_now_make_numbered_jobs(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    made = _create(client, site, "every-minute")
    sid = made["id"]
    with prefect_api(stack) as prefect:
        scheduled = scheduled_runs(stack, prefect, sid)
        # the scheduler's times are the ones the API announced
        starts = [datetime.fromisoformat(r["expected_start_time"]) for r in scheduled]
        announced = [datetime.fromisoformat(t) for t in made["next_runs"]]
        assert starts[: len(announced)] == announced[: len(starts)]

        r = client.post(f"/v1/schedules/{sid}/run")
        assert r.status_code == 202, r.text
        first = r.json()
        assert (first["schedule_id"], first["run_number"]) == (sid, 1)
        first = stack.wait_job(client, first["id"], FINAL, timeout=120)
        assert first["status"] == "completed" and first["urls_done"] == 5

        # a run of Prefect's scheduler, due now: it makes run 2 and runs it in the same flow run
        flow_run = scheduled[0]
        due_now(prefect, flow_run["id"])
        ended = final_state(stack, prefect, flow_run["id"])
        assert ended["state"]["type"] == "COMPLETED", ended["state"]
        jobs = _runs(client, sid)
        assert [(j["run_number"], j["status"]) for j in jobs] == [
            (2, "completed"),
            (1, "completed"),
        ]
        second = jobs[0]
        assert second["flow_run_id"] == flow_run["id"]
        assert ended["name"].startswith(second["id"])  # named after its job
        assert second["urls_done"] == 5
        # compared with run 1 (the site's pages did not change), as every run after the first
        assert first["changes"] is None
        changes = second["changes"]
        assert changes["previous_job_id"] == first["id"]
        assert (changes["added"], changes["removed"], changes["changed"]) == (0, 0, 0)
        assert changes["unchanged"] == 5

        # the same flow run started again (a retry, a crashed start): no second job
        due_now(prefect, flow_run["id"])
        final_state(stack, prefect, flow_run["id"])
        assert len(_runs(client, sid)) == 2
        got = client.get(f"/v1/schedules/{sid}").json()
        assert (got["runs"], got["last_job_id"], got["skipped_runs"]) == (2, second["id"], 0)
        assert client.delete(f"/v1/schedules/{sid}").status_code == 204
        assert client.get(f"/v1/jobs/{second['id']}").json()["schedule_id"] == sid


def test_a_run_due_while_one_goes_is_skipped_and_counted(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    slow = [site.url(f"/slow/{i}?ms=1500") for i in range(6)]
    job = {"input": {"urls": slow}, "defaults": {"extract": SCHEMA}, "concurrency": 1}
    r = client.post("/v1/schedules", json={"name": "slow-one", "interval_s": 60, "job": job})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    with prefect_api(stack) as prefect:
        scheduled = scheduled_runs(stack, prefect, sid)
        going = client.post(f"/v1/schedules/{sid}/run").json()
        stack.wait_job(client, going["id"], {"running"}, timeout=60)
        assert client.post(f"/v1/schedules/{sid}/run").status_code == 409

        due_now(prefect, scheduled[0]["id"])
        ended = final_state(stack, prefect, scheduled[0]["id"])
        assert ended["state"]["type"] == "COMPLETED" and ended["state"]["name"] == "Skipped"
        assert "skipped" in ended["state"]["message"] and going["id"] in ended["state"]["message"]
        got = client.get(f"/v1/schedules/{sid}").json()
        assert (got["runs"], got["skipped_runs"]) == (1, 1)
        assert [j["id"] for j in _runs(client, sid)] == [going["id"]]

        # deleting the schedule lets the run in flight finish
        assert client.delete(f"/v1/schedules/{sid}").status_code == 204
        assert scheduled_runs_now(prefect, sid) == []  # its future runs went with it
        done = stack.wait_job(client, going["id"], FINAL, timeout=120)
        assert done["status"] == "completed" and done["urls_done"] == 6


def test_a_pause_in_prefect_shows_and_schedules_outlive_a_worker_restart(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    made = _create(client, site, "survivor")
    sid = made["id"]
    with prefect_api(stack) as prefect:
        dep = deployment(prefect)
        (ours,) = [s for s in dep["schedules"] if s["slug"] == f"shoal-{sid}"]
        assert ours["parameters"] == {"schedule_id": sid} and ours["active"] is True

        # the UI's toggle
        r = prefect.patch(
            f"/deployments/{dep['id']}/schedules/{ours['id']}", json={"active": False}
        )
        assert r.status_code == 204, r.text
        got = client.get(f"/v1/schedules/{sid}").json()
        assert got["paused"] is True and got["next_runs"] == []
        assert (
            client.patch(f"/v1/schedules/{sid}", json={"paused": False}).json()["paused"] is False
        )

        # the worker stops (SIGTERM: Prefect's runner pauses its deployments) and comes back
        pids_file = stack.data_dir / "pids.json"
        worker = json.loads(pids_file.read_text())["worker"]
        os.kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while json.loads(pids_file.read_text()).get("worker", worker) == worker:
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.1)
        poll_until(
            lambda: deployment(prefect),
            lambda d: d["paused"] is False and d["status"] == "READY",
            90,
            "the restarted worker did not take its deployment back",
            stack._logs,
            0.25,
        )
        dep = deployment(prefect)
        (ours,) = [s for s in dep["schedules"] if s["slug"] == f"shoal-{sid}"]
        assert ours["active"] is True
        assert client.get(f"/v1/schedules/{sid}").json()["paused"] is False

        # and it runs: a scheduled run of it, due now, becomes run 1
        scheduled = scheduled_runs(stack, prefect, sid)
        due_now(prefect, scheduled[0]["id"])
        assert final_state(stack, prefect, scheduled[0]["id"])["state"]["type"] == "COMPLETED"
        (job,) = _runs(client, sid)
        assert (job["run_number"], job["status"]) == (1, "completed")
        assert client.delete(f"/v1/schedules/{sid}").status_code == 204
