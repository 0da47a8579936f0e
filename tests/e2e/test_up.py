"""``shoal up`` itself: a SIGTERM (or Ctrl-C) stops every child cleanly, none left to SIGKILL."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.e2e.stack import Stack
from tests.procs import process_running
from tests.sites.catalog import Site


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_every_child_without_sigkill(tmp_path, site: Site, sig) -> None:  # type: ignore[no-untyped-def]
    stack = Stack(tmp_path / "data").start()
    try:
        with stack.client() as c:  # the worker has served a flow run before it is stopped
            jid = c.post("/v1/jobs", json={"input": {"url": site.url("/p/1")}}).json()["id"]
            stack.wait_job(c, jid, {"completed"}, timeout=60)
        pids = json.loads((stack.data_dir / "pids.json").read_text())
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
    assert os.path.exists(stack.data_dir / "local-api-key")
