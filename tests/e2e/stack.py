"""Starting the real stack (``shoal up``) in subprocesses for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.net import free_port

#: Prefect's and Shoal's loop intervals lowered for test stacks: how often a loop looks, never
#: what it decides. Measured (tests/e2e, load ~17): the schedule tests waited for Prefect's
#: scheduler's main loop (60 s: a schedule added to an existing deployment does not touch its
#: ``updated``, so the 5 s "recent deployments" loop never sees it): the skip test took 52.6 s,
#: with 2 s 12.9 s. A dead run's ``Crashed`` comes from a proactive automation evaluated every
#: 5 s, and the resume service looks every 10 s: 1 s each takes up to 13 s off every resume.
FAST_LOOPS = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",  # a timedelta: ISO 8601
    "SHOAL_RESUME_POLL_S": "1",
}


class Stack:
    """``shoal up`` on a data folder, with an authenticated client for its API."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.prefect_port = free_port()
        self.env = {
            **os.environ,
            "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
            "SHOAL_PROGRESS_INTERVAL_S": "0.5",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            **FAST_LOOPS,
            **env,
        }
        for var in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_DATABASE_CONNECTION_URL"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[str] | None = None
        self.banner = ""
        self.key = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> Stack:
        cmd = [
            sys.executable,
            "-m",
            "shoal.cli",
            "up",
            "--port",
            str(self.port),
            "--prefect-port",
            str(self.prefect_port),
            "--data-dir",
            str(self.data_dir),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("shoal up exited:\n" + "".join(lines) + self._logs())
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        else:
            raise RuntimeError("shoal up did not come up:\n" + "".join(lines))
        self.banner = "".join(lines)
        self.key = (self.data_dir / "local-api-key").read_text().strip()
        return self

    def _logs(self) -> str:
        out = []
        for f in sorted((self.data_dir / "logs").glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text()[-3000:])
        return "\n".join(out)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, timeout=30, headers={"Authorization": f"Bearer {key or self.key}"}
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill9()

    def keys_create(self, account: str) -> str:
        """``shoal keys create``: the key is the last line of stdout."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal.cli",
                "keys",
                "create",
                "--account",
                account,
                "--data-dir",
                str(self.data_dir),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def kill9(self) -> None:
        """Kill ``shoal up`` and every process group it started, as a power cut would."""
        pids = json.loads((self.data_dir / "pids.json").read_text())
        for name, pid in pids.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if name == "up":
                    os.kill(pid, signal.SIGKILL)
                else:
                    os.killpg(pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def wait_job(
        self,
        client: httpx.Client,
        job_id: str,
        statuses: set[str],
        timeout: float = 240,
        until: Callable[[dict[str, Any]], bool] | None = None,
        poll: float = 0.25,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until its status is in ``statuses`` and ``until(job)`` holds;
        ``on_poll(job)`` sees every answer (benchmarks print progress with it)."""

        def get() -> dict[str, Any]:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if on_poll is not None:
                on_poll(job)
            return job

        def alive() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"shoal up died while waiting for {job_id}\n{self._logs()}")

        return poll_until(
            get,
            lambda job: job.get("status") in statuses and (until is None or until(job)),
            timeout,
            f"job {job_id} never reached {statuses}",
            self._logs,
            poll,
            between=alive,
        )


def poll_until(
    get: Callable[[], dict[str, Any]],
    until: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    logs: Callable[[], str] = str,
    poll: float = 0.2,
    between: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """``get()`` every ``poll`` seconds until ``until(answer)`` holds; the answer. Past
    ``timeout`` it fails saying ``what``, the last answer and ``logs()``; ``between()`` runs
    after each answer that does not hold yet (to fail early)."""
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = get()
        if until(answer):
            return answer
        if between is not None:
            between()
        time.sleep(poll)
    raise AssertionError(f"{what}: {answer}\n{logs()}")
