"""Shoal past one machine, played on this one: each role a process of its own, sharing only what
machines share (a Prefect server on PostgreSQL, the job store on PostgreSQL, results on S3),
each with a data folder and a Prefect home of its own, no local file in common.

The roles are started with the commands the README gives an operator: ``prefect server
start``, ``shoal pool setup`` + ``prefect deploy --all``, ``shoal worker``, ``shoal services``,
``shoal api``. Every role runs in its own process group, so ``kill9`` takes a role and the flow
runs and chunk processes it started, as a dead machine would.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.stack import FAST_LOOPS
from tests.net import free_port
from tests.pgserver import PgServer
from tests.procs import descendants, process_running
from tests.s3server import S3Server

REPO = Path(__file__).resolve().parents[2]


class Role:
    """One role's process (and its process group); its output in ``<root>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Role:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tree(self) -> list[int]:
        """This role's process and every process under it (flow runs, chunk processes)."""
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def kill9(self) -> list[int]:
        """SIGKILL the role and everything it started; the pids killed."""
        pids = self.tree()
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while any(process_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def stop(self, grace_s: float = 20) -> None:
        if not self.alive():
            return
        pids = self.tree()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            assert self.proc is not None
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:  # whatever did not stop, and flow runs that left the group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def tail(self, n: int = 4000) -> str:
        return f"--- {self.name}\n" + (
            self.log.read_text(errors="replace")[-n:] if self.log.exists() else "(no log)"
        )


class Topology:
    """A Prefect server, the services, the API and any number of workers, as separate
    machines would run them (see the module docstring)."""

    def __init__(self, root: Path, pg: PgServer, s3: S3Server, **env: str) -> None:
        self.root = root
        self.prefect_port = free_port()
        self.api_port = free_port()
        bucket = s3.make_bucket()
        self.prefect_db = pg.new_database().replace("postgresql+psycopg", "postgresql+asyncpg")
        self.store_db = pg.new_database()
        self.shared = {  # what every machine is told, and nothing else in common
            **{k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_"))},
            **s3.env(),
            "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "SHOAL_DATABASE_URL": self.store_db,
            "SHOAL_RESULTS_URL": f"s3://{bucket}/shoal",
            "SHOAL_SIGNING_SECRET": secrets.token_urlsafe(16),
            "SHOAL_PUBLIC_URL": f"http://127.0.0.1:{self.api_port}",
            "SHOAL_WORK_POOL": "shoal",
            "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
            "SHOAL_PROGRESS_INTERVAL_S": "0.5",
            "SHOAL_PRESIGN_TTL_S": "0",  # the API streams results: clients need not reach S3
            "PYTHONUNBUFFERED": "1",
            **FAST_LOOPS,  # the Prefect server's and the resume service's (tests/e2e/stack.py)
            **env,
        }
        self.roles: dict[str, Role] = {}
        self.key = ""

    # ---------------------------------------------------------------------- one machine each
    def _env(self, machine: str, **extra: str) -> dict[str, str]:
        home = self.root / machine
        return {
            **self.shared,
            "SHOAL_DATA_DIR": str(home / "data"),
            "PREFECT_HOME": str(home / "prefect"),
            "HOME": str(home),
            **extra,
        }

    def _shoal(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "shoal.cli", *args]

    def _run(self, machine: str, argv: list[str], cwd: Path | None = None, **extra: str) -> str:
        (self.root / machine).mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            argv,
            env=self._env(machine, **extra),
            cwd=cwd or self.root / machine,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def start(self, workers: int = 2) -> Topology:
        server_env = {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.prefect_db,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
        }
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        argv += ["--port", str(self.prefect_port)]
        self._role("prefect", argv, **server_env)
        self._wait(f"http://127.0.0.1:{self.prefect_port}/api/health", "prefect", 180)
        # the operator's one-time setup, from the checkout: pool, queues, deployments
        self._run("operator", self._shoal("pool", "setup"))
        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
        self._run("operator", [*prefect, "deploy", "--all"], cwd=REPO)
        self.key = self._run("operator", self._shoal("keys", "create", "--account", "acme"))
        self.key = self.key.strip().splitlines()[-1]
        self._role("services", self._shoal("services"))
        for n in range(1, workers + 1):
            self.start_worker(f"worker-{n}")
        self._role("api", self._shoal("api", "--port", str(self.api_port)))
        self._wait(f"{self.api}/v1/health", "api", 120)
        return self

    def start_worker(self, name: str) -> Role:
        return self._role(name, self._shoal("worker", "--pool", "shoal"))

    def _role(self, name: str, argv: list[str], **extra: str) -> Role:
        role = Role(name, argv, self._env(name, **extra), self.root / name).start()
        self.roles[name] = role
        return role

    def _wait(self, url: str, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.roles[name].alive():
                raise RuntimeError(f"{name} exited\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s\n{self.logs()}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, timeout=30, headers={"Authorization": f"Bearer {key or self.key}"}
        )

    def new_key(self, account: str) -> str:
        out = self._run("operator", self._shoal("keys", "create", "--account", account))
        return out.strip().splitlines()[-1]

    def prefect(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.prefect_port}/api", timeout=30)

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        with self.prefect() as p:
            answer = p.get(f"/flow_runs/{flow_run_id}")
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def worker_of(self, flow_run_id: str) -> str | None:
        """Which worker role runs the flow run now (its process is under that role)."""
        pid_text = (self.flow_run(flow_run_id).get("infrastructure_pid") or "").rsplit(":", 1)
        if not pid_text[-1].isdigit():
            return None
        pid = int(pid_text[-1])
        for name, role in self.roles.items():
            if name.startswith("worker") and pid in role.tree():
                return name
        return None

    def logs(self) -> str:
        return "\n".join(role.tail() for role in self.roles.values())

    def stop(self) -> None:
        for name in [n for n in self.roles if n != "prefect"] + ["prefect"]:
            if name in self.roles:
                self.roles[name].stop()
