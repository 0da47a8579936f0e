"""``shoal.supervisor`` with real processes: restarts with backoff, leftovers stopped, nothing
outlives a SIGKILLed supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.supervisor import Supervisor
from tests.procs import process_running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: prctl")

PY = sys.executable

# a child that forks two grandchildren, one in its own group and one in a new session (as
# Prefect may start a flow run), writes the three pids to argv[1], then sleeps
FAMILY = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    same = subprocess.Popen(sleep)
    apart = subprocess.Popen(sleep, start_new_session=True)
    with open(sys.argv[1] + ".tmp", "w") as fh:
        json.dump([os.getpid(), same.pid, apart.pid], fh)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 600)
    """
)


def until(check: Callable[[], object], timeout: float = 15, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_a_child_that_exits_is_restarted_with_growing_pauses(tmp_path: Path) -> None:
    said: list[str] = []
    starts: list[float] = []
    sup = Supervisor(
        env=dict(os.environ),
        logs=tmp_path / "logs",
        echo=said.append,
        on_change=lambda pids: "flaky" in pids and starts.append(time.monotonic()),
        first_pause_s=0.2,
        max_pause_s=0.8,
        stable_s=60,
    )
    with sup:
        sup.start("flaky", [PY, "-c", "import sys; print('hello'); sys.exit(3)"])
        sup.wait(lambda: len(starts) >= 5, 0.02, timeout_s=30)
        assert sup.children["flaky"].restarts == 4
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # pauses 0.2, 0.4, 0.8, 0.8 (capped), plus the time a Python takes to start and exit
    for gap, pause in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
        assert pause <= gap < pause + 1.5, gaps
    assert "flaky exited (exit 3)" in said[0] and "restarting in 0 s" in said[0], said
    assert any(line.startswith("flaky restarted (pid ") for line in said)
    log = (tmp_path / "logs" / "flaky.log").read_text()
    assert "hello" in log and "[shoal up] flaky exited (exit 3)" in log


def test_the_pause_starts_over_after_a_child_stayed_up(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(
        env=dict(os.environ),
        logs=tmp_path / "logs",
        echo=said.append,
        first_pause_s=0.1,
        max_pause_s=5,
        stable_s=0.3,
    )
    with sup:
        sup.start("steady", [PY, "-c", "import time; time.sleep(0.5)"])
        sup.wait(lambda: sup.children["steady"].restarts >= 3, 0.02, timeout_s=30)
    exits = [line for line in said if "exited" in line]
    assert len(exits) >= 3 and all("restarting in 0 s" in line for line in exits), said
    assert sup.children["steady"].pause == pytest.approx(0.2)  # never doubled past one step


def test_what_a_dead_child_left_running_is_stopped_before_the_restart(tmp_path: Path) -> None:
    """As when the worker was killed: its flow runs (in its group or apart) must not linger."""
    family = tmp_path / "family.json"
    said: list[str] = []
    sup = Supervisor(
        env=dict(os.environ), logs=tmp_path / "logs", echo=said.append, first_pause_s=0.1
    )
    with sup:
        sup.start("worker", [PY, "-c", FAMILY, str(family)])
        sup.wait(lambda: read_json(family), 0.02, timeout_s=15)
        pids = read_json(family)
        assert isinstance(pids, list)
        family.unlink()
        os.kill(pids[0], signal.SIGKILL)
        sup.wait(lambda: read_json(family), 0.02, timeout_s=15)
        again = read_json(family)
        assert [p for p in pids if process_running(p)] == []
        assert isinstance(again, list) and all(process_running(p) for p in again)
        assert "worker exited (signal SIGKILL)" in said[0], said
        assert "2 process(es) it left stopped" in said[0], said
    assert [p for p in again if process_running(p)] == []  # the stop reached them all


SUPERVISED = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from shoal.supervisor import Supervisor

    data = Path(sys.argv[1])
    def write(pids):
        (data / "pids.tmp").write_text(json.dumps(pids))
        (data / "pids.tmp").replace(data / "pids.json")
    sup = Supervisor(env=dict(os.environ), logs=data / "logs", on_change=write, grace_s=5)
    sup.install_signals()
    with sup:
        for name in ("first", "second"):
            sup.start(name, [sys.executable, "-c", sys.argv[2], str(data / f"{name}.json")])
        sup.run(every_s=0.05)
    print("clean exit", flush=True)
    """
)


def start_supervised(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [PY, "-c", SUPERVISED, str(tmp_path), FAMILY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    family: list[int] = []
    for name in ("first", "second"):
        pids = until(lambda n=name: read_json(tmp_path / f"{n}.json"), what=name)
        assert isinstance(pids, list)
        family += pids
    assert set(read_json(tmp_path / "pids.json")) == {"first", "second"}  # type: ignore[arg-type]
    return proc, family


def test_sigkill_of_the_supervisor_takes_every_child_and_grandchild(tmp_path: Path) -> None:
    proc, family = start_supervised(tmp_path)
    assert all(process_running(p) for p in family)
    started = time.monotonic()
    proc.kill()
    proc.wait(10)
    until(lambda: not any(process_running(p) for p in family), 10, "every process gone")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_children_in_reverse_order(tmp_path: Path, sig: int) -> None:
    proc, family = start_supervised(tmp_path)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert lines[:2] == ["second stopped (signal SIGTERM)", "first stopped (signal SIGTERM)"], out
    assert lines[-1] == "clean exit"
    assert [p for p in family if process_running(p)] == []


def test_a_child_gets_sigkill_when_its_parent_dies(tmp_path: Path) -> None:
    """``die_with_parent`` alone (no watchdog): the kernel ends the child with its parent."""
    out = tmp_path / "child.json"
    parent = textwrap.dedent(
        """
        import json, subprocess, sys, time
        from shoal.supervisor import die_with_parent
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=die_with_parent()
        )
        with open(sys.argv[1] + ".tmp", "w") as fh:
            json.dump(child.pid, fh)
        import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([PY, "-c", parent, str(out)])
    try:
        child = until(lambda: read_json(out), what="the child")
        assert isinstance(child, int) and process_running(child)
    finally:
        proc.kill()
        proc.wait(10)
    until(lambda: not process_running(child), 5, "the child ended with its parent")
