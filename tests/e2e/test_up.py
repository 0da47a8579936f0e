"""``shoal up`` itself: a SIGTERM (or Ctrl-C) stops every child cleanly, none left to SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.e2e.stack import Stack
from tests.procs import cmdline, descendants, process_running
from tests.sites.catalog import Site


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
    for name in ("api", "worker", "prefect"):
        assert f"{name} stopped (exit" in out, out
    assert "killed" not in out, out
    assert [n for n, pid in pids.items() if process_running(pid)] == []
    assert [p for p in under_worker if process_running(p)] == []
    assert os.path.exists(stack.data_dir / "local-api-key")


def test_maintenance_runs_on_its_schedule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker serves ``maintenance/scheduled`` every ``SHOAL_MAINTENANCE_INTERVAL_S``, and
    Prefect's scheduler really creates its runs (with SQLAlchemy 2.1 it failed on every pass and
    retention never ran on its own: SQLAlchemy is pinned below 2.1)."""
    stack = Stack(tmp_path / "data", SHOAL_MAINTENANCE_INTERVAL_S="5").start()
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    try:
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
    finally:
        stack.stop()
    assert "bulk DML" not in (stack.data_dir / "logs" / "prefect.log").read_text()
