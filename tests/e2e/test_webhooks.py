"""Webhooks on the real stack: signed deliveries, retried with backoff by the worker's own
delivery tasks, every attempt in `GET /v1/jobs/{id}/webhooks`, and a receiver that never
answers delays neither its job nor other receivers."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from typing import Any

import httpx

from shoal.webhooks import verify
from tests.e2e.stack import Stack, poll_until
from tests.sites.catalog import Site
from tests.sites.receiver import Receiver

TIMEOUT_S = 20.0  # long enough to be sure the other deliveries happen meanwhile


def _submit(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _log_when(client: httpx.Client, job_id: str, until: Any, timeout: float = 60) -> dict[str, Any]:
    """The job's webhook log once ``until(log)`` holds (polled with a deadline)."""
    return poll_until(
        lambda: client.get(f"/v1/jobs/{job_id}/webhooks").json(),
        until,
        timeout,
        f"webhook log of {job_id} never got there",
    )


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _task_runs(stack: Stack, name_like: str) -> list[dict[str, Any]]:
    r = httpx.post(
        f"http://127.0.0.1:{stack.prefect_port}/api/task_runs/filter",
        json={"task_runs": {"name": {"like_": name_like}}},
    )
    r.raise_for_status()
    return list(r.json())


def test_webhooks_on_the_real_stack(tmp_path, site: Site) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver().start()
    receiver.script("/hang", ["hang"])  # the first delivery gets no answer, the second a 200
    receiver.script("/flaky", [500, 500])  # fails twice, then 200
    stack = Stack(
        tmp_path / "data",
        SHOAL_WEBHOOK_BACKOFF_S="0.2",
        SHOAL_WEBHOOK_TIMEOUT_S=str(TIMEOUT_S),
        SHOAL_WEBHOOK_POLL_S="0.2",
    ).start()
    try:
        with stack.client() as c:
            secret = c.get("/v1/account").json()["webhook_secret"]

            # 1. a receiver that never answers: the job ends on time all the same
            hang_id = _submit(
                c, {"input": {"url": site.url("/p/1")}, "webhook": receiver.url("/hang")}
            )
            hang_job = stack.wait_job(c, hang_id, {"completed"}, timeout=90)
            (first_hang,) = receiver.wait_for("/hang", 1, timeout=30)
            # the job had ended before its delivery started
            assert _ts(hang_job["completed_at"]) <= first_hang.at

            # 2. while that delivery hangs: a receiver that fails twice, and a cancelled job
            flaky_id = _submit(
                c,
                {
                    "input": {"urls": [site.url("/p/2"), site.url("/status/404")]},
                    "webhook": {"url": receiver.url("/flaky"), "events": ["job.completed"]},
                },
            )
            cancel_id = _submit(
                c,
                {
                    "input": {"urls": [site.url(f"/slow/{i}?ms=1500") for i in range(6)]},
                    "concurrency": 1,
                    "webhook": receiver.url("/cancelled"),
                },
            )
            assert c.delete(f"/v1/jobs/{cancel_id}").status_code == 202

            flaky_job = stack.wait_job(c, flaky_id, {"partial"}, timeout=90)
            got = receiver.wait_for("/flaky", 3, timeout=30)
            # different receivers do not wait for each other: all three came while /hang hung
            hung_until = first_hang.at + TIMEOUT_S
            assert got[2].at < hung_until, (first_hang.at, flaky_job, [r.at for r in got])
            assert len({r.body for r in got}) == 1  # every attempt sends the same bytes
            for r in got:
                assert verify(secret, r.body, r.headers["Shoal-Signature"])
                assert r.headers["Content-Type"] == "application/json"
            body = json.loads(got[2].body)
            assert body["type"] == "job.completed" and body["id"].startswith("evt_")
            assert body["data"]["id"] == flaky_id
            assert body["data"]["status"] == flaky_job["status"] == "partial"
            assert body["data"]["urls_errored"] == 1 and body["data"]["download_url"]

            log = _log_when(c, flaky_id, lambda lg: lg["events"][0]["state"] == "delivered")
            assert log["webhook"] == {"url": receiver.url("/flaky"), "events": ["job.completed"]}
            d = log["deliveries"]
            assert [(x["attempt"], x["status_code"], x["delivered"]) for x in d] == [
                (1, 500, False),
                (2, 500, False),
                (3, 200, True),
            ]
            assert d[0]["error"].startswith("http_status") and d[2]["error"] is None
            assert d[0]["next_retry_at"] and d[2]["next_retry_at"] is None
            assert {x["event_id"] for x in d} == {body["id"]}
            # each attempt was a Prefect task run of its own
            deadline = time.monotonic() + 30
            while len(runs := _task_runs(stack, f"deliver-{body['id']}-%")) < 3:
                assert time.monotonic() < deadline, runs
                time.sleep(0.5)

            # 3. the cancelled job sends job.cancelled
            cancelled = stack.wait_job(c, cancel_id, {"cancelled"}, timeout=90)
            (note,) = receiver.wait_for("/cancelled", 1, timeout=30)
            assert verify(secret, note.body, note.headers["Shoal-Signature"])
            sent = json.loads(note.body)
            assert sent["type"] == "job.cancelled"
            assert sent["data"]["status"] == cancelled["status"] == "cancelled"

            # 4. the hanging delivery: recorded as a timeout, then retried and delivered
            log = _log_when(c, hang_id, lambda lg: lg["events"][0]["state"] == "delivered")
            first, second = log["deliveries"]
            assert first["status_code"] is None and first["error"].startswith("timeout")
            assert first["duration_ms"] >= (TIMEOUT_S - 0.5) * 1000
            assert (second["attempt"], second["status_code"]) == (2, 200)
            assert _ts(hang_job["completed_at"]) <= _ts(first["requested_at"])

            # 5. a stop during a delivery that hangs is still quick and clean
            receiver.script("/hang2", ["hang"])
            last = _submit(
                c, {"input": {"url": site.url("/p/3")}, "webhook": receiver.url("/hang2")}
            )
            stack.wait_job(c, last, {"completed"}, timeout=90)
            receiver.wait_for("/hang2", 1, timeout=30)
        assert stack.proc is not None and stack.proc.stdout is not None
        t0 = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        out = stack.proc.stdout.read()
        assert stack.proc.wait(60) == 0
        assert time.monotonic() - t0 < 15
        assert "worker stopped (exit" in out and "killed" not in out, out
    finally:
        stack.stop()
        receiver.stop()
