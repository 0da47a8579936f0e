"""Retry of the errored URLs and Idempotency-Key, through HTTP on the real stack."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.stack import Stack
from tests.sites.catalog import Site

FINAL = {"completed", "partial", "cancelled", "failed"}


def test_retry_runs_exactly_the_errored_urls(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    plan = [site.url(f"/p/{i}") for i in range(6)] + [
        site.url(f"/status/404/{i}") for i in range(4)
    ]
    plan = plan[::2] + plan[1::2]  # errored URLs spread over the input
    items = [
        {"url": u, "meta": {"k": i}, **({"timeout_s": 5} if "status" in u else {})}
        for i, u in enumerate(plan)
    ]
    r = client.post("/v1/jobs", json={"input": {"urls": items}, "priority": "high"})
    assert r.status_code == 202, r.text
    parent = stack.wait_job(client, r.json()["id"], FINAL, timeout=120)
    assert parent["status"] == "partial" and parent["urls_errored"] == 4

    r = client.post(f"/v1/jobs/{parent['id']}/retry")
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["parent_job_id"] == parent["id"] and created["urls_total"] == 4
    job = stack.wait_job(client, created["id"], FINAL, timeout=120)
    assert job["parent_job_id"] == parent["id"] and job["priority"] == "high"
    assert job["status"] == "partial" and (job["urls_done"], job["urls_errored"]) == (4, 4)

    results = client.get(f"/v1/jobs/{job['id']}/results").json()["results"]
    errored = [(i, u) for i, u in enumerate(plan) if "status" in u]
    assert [x["url"] for x in results] == [u for _, u in errored]
    assert [x["meta"] for x in results] == [{"k": i} for i, _ in errored]
    assert [x["input_index"] for x in results] == [0, 1, 2, 3]
    assert all(x["error"]["code"] == "http_4xx" for x in results)

    # the original is final with errored URLs, the new one too; a running job cannot be retried
    r = client.post("/v1/jobs", json={"urls": [site.url(f"/slow/{i}?ms=300") for i in range(40)]})
    slow = r.json()["id"]
    r = client.post(f"/v1/jobs/{slow}/retry")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    client.delete(f"/v1/jobs/{slow}")


def test_same_idempotency_key_twice_is_one_job(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    key = f"e2e-{uuid.uuid4()}"
    body = {"name": "idem", "urls": [site.url("/p/1"), site.url("/p/2")]}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    other = client.post(
        "/v1/jobs", json={**body, "name": "other"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409 and other.headers["content-type"] == "application/problem+json"
    named = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert [j["id"] for j in named if j["name"] == "idem"] == [first.json()["id"]]
    job = stack.wait_job(client, first.json()["id"], FINAL, timeout=60)
    assert job["status"] == "completed"
