"""``shoal up`` itself: the banner only once the API is ready; a child that dies is restarted and
jobs still run; a SIGTERM (or Ctrl-C) stops every child cleanly, none left to SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.stack import Stack
from tests.procs import cmdline, descendants, process_running
from tests.sites.catalog import Site

FINAL = {"completed", "partial", "failed", "cancelled"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the tests that look at a running one and do not stop it (the maintenance
    schedule; the banner and a killed worker's restart): a start is 15-20 s (and ~30 s of CPU)
    that the second no longer pays. The banner's test comes first (it looks at the stack just
    started); maintenance every 5 s, for the other."""
    s = Stack(tmp_path_factory.mktemp("up") / "data", SHOAL_MAINTENANCE_INTERVAL_S="5").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_every_child_without_sigkill(tmp_path, site: Site, sig) -> None:  # type: ignore[no-untyped-def]
    stack = Stack(tmp_path / "data").start()
    try:
        with stack.client() as c:  # the worker has served a flow run before it is stopped
            jid = c.post("/v1/jobs", json={"input": {"url": site.url("/p/1")}}).json()["id"]
            stack.wait_job(c, jid, {"completed"}, timeout=60)
        pids = json.loads((stack.data_dir / "pids.json").read_text())
        # the worker's forkserver and whatever it forked (flow runs, their chunk processes)
        under_worker = descendants(pids["worker"])
        assert any("multiprocessing.forkserver" in cmdline(p) for p in under_worker)
        assert stack.proc is not None and stack.proc.stdout is not None
        stack.proc.send_signal(sig)
        out = stack.proc.stdout.read()
        assert stack.proc.wait(60) == 0
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.kill9()
    for name in ("api", "worker", "services", "prefect"):
        assert f"{name} stopped (" in out, out  # exit 0, or the SIGTERM it was sent
    assert out.index("api stopped") < out.index("worker stopped") < out.index("services stopped")
    assert out.index("services stopped") < out.index("prefect stopped")
    assert "killed" not in out, out
    assert [n for n, pid in pids.items() if process_running(pid)] == []
    assert [p for p in under_worker if process_running(p)] == []
    assert os.path.exists(stack.data_dir / "local-api-key")


def test_banner_once_ready_and_a_killed_worker_is_restarted(running: Stack, site: Site) -> None:
    stack = running
    # the banner comes once a job posted now would start
    assert httpx.get(f"{stack.base}/v1/health").status_code == 200
    assert "Shoal is up." in stack.banner
    pids_file = stack.data_dir / "pids.json"
    pids = json.loads(pids_file.read_text())
    assert set(pids) == {"up", "prefect", "services", "worker", "api"}
    with stack.client() as c:  # the worker has forked flow runs before it dies
        jid = c.post("/v1/jobs", json={"input": {"url": site.url("/p/1")}}).json()["id"]
        stack.wait_job(c, jid, {"completed"}, timeout=60)
        # a job in flight when the worker dies: its flow run is stopped with the worker,
        # and the services resume the job on the restarted worker
        urls = [site.url(f"/slow/{i}?ms=100") for i in range(400)]
        body = {"input": {"urls": urls}, "concurrency": 4}
        inflight = c.post("/v1/jobs", json=body).json()["id"]
        stack.wait_job(c, inflight, {"running"}, until=lambda j: j["urls_done"] >= 20)
    under_worker = descendants(pids["worker"])
    assert under_worker

    os.kill(pids["worker"], signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 30
    while json.loads(pids_file.read_text()).get("worker", pids["worker"]) == pids["worker"]:
        assert time.monotonic() < deadline, "the worker was not restarted within 30 s"
        time.sleep(0.05)
    back_s = time.monotonic() - killed
    print(f"worker restarted {back_s:.2f} s after SIGKILL")
    assert [p for p in under_worker if process_running(p)] == []  # nothing it left runs
    log = stack.data_dir / "logs" / "worker.log"
    while "[shoal up] worker restarted (pid " not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "[shoal up] worker exited (signal SIGKILL)" in log.read_text()
    assert stack.proc is not None and stack.proc.poll() is None  # the rest stayed up
    again = json.loads(pids_file.read_text())
    assert {n: again[n] for n in ("api", "prefect", "services")} == {
        n: pids[n] for n in ("api", "prefect", "services")
    }

    with stack.client() as c:  # the new worker runs jobs
        jid = c.post("/v1/jobs", json={"input": {"url": site.url("/p/2")}}).json()["id"]
        stack.wait_job(c, jid, {"completed"}, timeout=60)
        print(f"a new job completed {time.monotonic() - killed:.2f} s after the SIGKILL")
        job = stack.wait_job(c, inflight, FINAL, timeout=180)
        assert job["status"] == "completed" and job["urls_done"] == len(urls), job
        print(f"the job in flight completed {time.monotonic() - killed:.2f} s after it")


def test_maintenance_runs_on_its_schedule(running: Stack) -> None:
    """The worker serves ``maintenance/scheduled`` every ``SHOAL_MAINTENANCE_INTERVAL_S``, and
    Prefect's scheduler really creates its runs (with SQLAlchemy 2.1 it failed on every pass and
    retention never ran on its own: SQLAlchemy is pinned below 2.1)."""
    api = f"http://127.0.0.1:{running.prefect_port}/api"
    deadline = time.monotonic() + 90
    done: list[dict] = []
    while not done:
        assert time.monotonic() < deadline, "no maintenance run completed within 90 s"
        runs = httpx.post(
            f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["maintenance"]}}}
        ).json()
        done = [r for r in runs if r["state"]["type"] == "COMPLETED"]
        time.sleep(0.5)
    assert done[0]["deployment_id"] is not None  # from the schedule, not started by hand
    # no scheduler pass failed meanwhile (the log is written unbuffered, line by line; the test
    # stacks' scheduler looks every 2 s: tests/e2e/stack.py)
    assert "bulk DML" not in (running.data_dir / "logs" / "prefect.log").read_text()
