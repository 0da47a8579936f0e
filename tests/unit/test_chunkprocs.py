"""Chunk worker processes: how a job's caps are split, and that no process outlives its flow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.chunkprocs import plan_shares, split
from tests.procs import process_running

ROOT = Path(__file__).resolve().parents[2]


def test_split_keeps_the_total_and_gives_the_remainder_to_the_first() -> None:
    assert split(16, 2) == [8, 8]
    assert split(5, 2) == [3, 2]
    assert split(256, 3) == [86, 85, 85]


def test_plan_shares_is_a_true_cap() -> None:
    assert plan_shares(16, 16, 2, 10) == [(8, 8), (8, 8)]
    assert plan_shares(20, 3, 2, 10) == [(10, 2), (10, 1)]
    assert plan_shares(10, 10, 2, 10) == []  # under MIN_PER_PROC each: in the flow process
    assert plan_shares(64, 64, 4, 1) == []  # one chunk: in the flow process
    assert plan_shares(64, 1, 4, 10) == []  # one request per host at a time: one process
    assert plan_shares(24, 2, 4, 10) == [(12, 1), (12, 1)]  # fewer processes than asked
    for conc, host, n, chunks in [(56, 3, 4, 9), (256, 64, 2, 80), (17, 17, 8, 8)]:
        shares = plan_shares(conc, host, n, chunks)
        assert sum(c for c, _ in shares) == conc and sum(h for _, h in shares) == host


_SCRIPT = """
import sys, time
from shoal.chunkprocs import ChunkProcs
from shoal.settings import Settings
procs = ChunkProcs(2, Settings())
print(procs._proc(0).process.pid, procs._proc(1).process.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_processes_die_with_the_flow_process(sig: int) -> None:
    """A UI cancel SIGTERMs the flow process, a crash may SIGKILL it: no worker lingers."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(process_running(p) for p in pids)
        os.kill(parent.pid, sig)
        parent.wait(10)
        deadline = time.monotonic() + 20  # they die within ~0.1 s; 5 s flaked on a loaded CI
        while any(process_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(process_running(p) for p in pids)
    finally:
        parent.kill()


_PREFORK = """
import json, sys, threading
from shoal import chunkprocs
from shoal.settings import Settings
s = Settings(chunk_processes=2)
n = chunkprocs.prefork(s)
spares = [p.pid for p, _ in chunkprocs._spares]
procs = chunkprocs.get_chunk_procs(s)
procs.prestart(1)  # takes a spare: no new interpreter
adopted = procs._procs[0]
threading.Thread(target=lambda: None).start()
late = chunkprocs.prefork(s)  # a thread has run: forking now would not be safe
print(json.dumps({"n": n, "spares": spares, "adopted": adopted.process.pid, "late": late}))
sys.stdout.flush()
"""


def test_prefork_adopt_and_exit_leave_no_process() -> None:
    """Pre-forked chunk processes: adopted first, refused once threads ran, and gone when the
    process that forked them exits (its exit must not wait on a spare never adopted)."""
    import json
    import subprocess
    import sys

    from tests.procs import process_running

    out = subprocess.run(
        [sys.executable, "-c", _PREFORK], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == 2 and len(got["spares"]) == 2
    assert got["adopted"] == got["spares"][0]
    assert got["late"] == 0
    assert [p for p in got["spares"] if process_running(p)] == []
