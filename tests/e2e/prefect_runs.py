"""Prefect's own view of a stack's schedules, for end-to-end tests: the flow runs its scheduler
made for a Shoal schedule, making one due now (as its time coming would), waiting for a flow
run to end."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.e2e.stack import Stack, poll_until


class _RetryBusy(httpx.HTTPTransport):
    """Ask again when Prefect's server answers 503 (its SQLite database was locked: seen in CI
    on a UI-style PATCH of a schedule), as Prefect's own client and its UI do: up to 6 times,
    0.25 s doubling between."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        wait = 0.25
        for _ in range(6):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(wait)  # a backoff between attempts, not a wait for an event
            wait *= 2
        return super().handle_request(request)


def prefect_api(stack: Stack) -> httpx.Client:
    """A client of the stack's Prefect API (what its UI calls)."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.prefect_port}/api", timeout=30, transport=_RetryBusy()
    )


def deployment(prefect: httpx.Client) -> dict[str, Any]:
    r = prefect.get("/deployments/name/scrape-job/embedded-normal")
    r.raise_for_status()
    return r.json()


def scheduled_runs(stack: Stack, prefect: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    """The flow runs Prefect's scheduler made for the schedule (it makes them a few seconds
    after the schedule appears), earliest first."""
    dep = deployment(prefect)
    query = {
        "deployments": {"id": {"any_": [dep["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC",
    }

    def get() -> dict[str, Any]:
        runs = prefect.post("/flow_runs/filter", json=query).json()
        return {"runs": [r for r in runs if r["parameters"] == {"schedule_id": schedule_id}]}

    found = poll_until(get, lambda a: bool(a["runs"]), 60, "no scheduled run", stack._logs, 0.5)
    return found["runs"]


def due_now(prefect: httpx.Client, flow_run_id: str) -> None:
    """Make a scheduled flow run due now, as its time coming would."""
    now = datetime.now(UTC).isoformat()
    r = prefect.post(
        f"/flow_runs/{flow_run_id}/set_state",
        json={
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": now}},
            "force": True,
        },
    )
    r.raise_for_status()


def final_state(stack: Stack, prefect: httpx.Client, flow_run_id: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        return prefect.get(f"/flow_runs/{flow_run_id}").json()

    run = poll_until(
        get,
        lambda r: r["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"),
        120,
        f"flow run {flow_run_id} never ended",
        stack._logs,
        0.25,
    )
    return run


def scheduled_runs_now(prefect: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    dep = deployment(prefect)
    query = {
        "deployments": {"id": {"any_": [dep["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }
    runs = prefect.post("/flow_runs/filter", json=query).json()
    return [r for r in runs if r["parameters"] == {"schedule_id": schedule_id}]
