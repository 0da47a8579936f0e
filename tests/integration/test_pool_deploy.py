"""The work pool path, as an operator runs it: ``python -m deployments.pool`` and the real
``prefect deploy --all`` from a copy of the project against the session's Prefect server, then
real ``prefect worker`` processes running jobs from the pool's queues."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prefect
import pytest
from packaging.version import Version
from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment
from prefect.settings import PREFECT_API_URL

from shoal.settings import get_settings
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import Site

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        Version(prefect.__version__) < Version("3.9"),
        reason="prefect deploy needs the Prefect of requirements.lock (3.8.8 with FastAPI 0.154 "
        "answers its client's null limits with 422): rebuild the venv from the lock",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
POOL_DEPLOYMENTS = {
    "scrape-job/high": "high",
    "scrape-job/normal": "normal",
    "scrape-job/low": "low",
    "maintenance/scheduled": "normal",
}
PULL = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SHOAL_CODE_DIR }}"}}]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a process on another machine: Prefect's URL, none of the test's
    Shoal settings unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_"))}
    env |= {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **extra,
    }
    return env


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project, as a worker machine's checkout."""
    dst = tmp_path_factory.mktemp("checkout") / "shoal"
    shutil.copytree(
        ROOT,
        dst,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".shoal", "__pycache__", "*.egg-info", "tests", "bench", "docs"
        ),
    )
    return dst


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


async def _deployed(code: Path, home: Path, **limits: str) -> None:
    env = _env(home, **limits)
    setup = await asyncio.to_thread(_run, [sys.executable, "-m", "deployments.pool"], code, env)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    deploy = await asyncio.to_thread(
        _run, [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], code, env
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr


async def _queues() -> dict[str, tuple[int, int | None]]:
    async with get_client() as client:
        queues = await client.read_work_queues(work_pool_name="shoal")
    return {q.name: (q.priority, q.concurrency_limit) for q in queues}


async def test_pool_setup_and_prefect_deploy_all(code: Path, tmp_path: Path) -> None:
    await _deployed(
        code,
        tmp_path,
        SHOAL_QUEUE_LIMIT_HIGH="3",
        SHOAL_QUEUE_LIMIT_LOW="1",
        SHOAL_POOL_CONCURRENCY_LIMIT="8",
    )
    async with get_client() as client:
        pool = await client.read_work_pool("shoal")
        assert (pool.type, pool.concurrency_limit) == ("process", 8)
        assert "env" in pool.base_job_template["variables"]["properties"]
        for name, queue in POOL_DEPLOYMENTS.items():
            d = await client.read_deployment_by_name(name)
            assert (d.work_pool_name, d.work_queue_name, d.paused) == ("shoal", queue, False)
            # the checkout is found on the worker at run time, not where it was deployed from
            assert d.pull_steps == PULL
            assert str(code) not in repr(d.model_dump())
        (schedule,) = (await client.read_deployment_by_name("maintenance/scheduled")).schedules
        assert schedule.schedule.interval.total_seconds() == 3600
    queues = await _queues()
    assert {k: v for k, v in queues.items() if k != "default"} == {
        "high": (1, 3),
        "normal": (2, None),
        "low": (3, 1),
    }
    assert queues["default"][0] > 3  # Prefect's own queue of the pool comes after ours

    # again with other limits: the pool and queues follow the settings, nothing is duplicated
    await _deployed(code, tmp_path, SHOAL_QUEUE_LIMIT_NORMAL="2")
    queues = await _queues()
    assert {k: v for k, v in queues.items() if k != "default"} == {
        "high": (1, None),
        "normal": (2, 2),
        "low": (3, None),
    }
    async with get_client() as client:
        assert (await client.read_work_pool("shoal")).concurrency_limit is None
    assert not (code / ".shoal").exists()


@contextlib.contextmanager
def _worker(queue: str, home: Path, cwd: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "shoal"]
    cmd += ["--type", "process", "--work-queue", queue]
    log = open(home / f"worker-{queue}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(home, PREFECT_WORKER_QUERY_SECONDS="1", **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


async def _final_state(deployment: str, job_id: str, home: Path, timeout: float = 180) -> Any:
    async with get_client() as client:
        run = await arun_deployment(
            deployment, client=client, parameters={"job_id": job_id}, timeout=0
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = (await client.read_flow_run(run.id)).state
            if state is not None and state.is_final():
                return state
            await asyncio.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in home.glob("worker-*.log"))
    raise AssertionError(f"flow run of {deployment} not final after {timeout} s\n{logs}")


async def test_pool_workers_run_jobs_with_the_apis_store(
    code: Path, tmp_path: Path, prefect_server: Path, site: Site
) -> None:
    """A worker given the API's store and secret runs a job from the pool; one started with only
    ``PREFECT_API_URL`` fails the run saying which store it looked in and what to set, and
    leaves no store behind in the checkout."""
    await _deployed(code, tmp_path)
    settings = get_settings()
    shared = {
        "SHOAL_CODE_DIR": str(code),
        "SHOAL_DATA_DIR": str(prefect_server),  # the API's store and results (the session's)
        "SHOAL_SIGNING_SECRET": "integration-secret",
        "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
        "SHOAL_CHUNK_PROCESSES": "0",
    }
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    with _worker("high", tmp_path, worker_dir, **shared):
        jid = _create({"urls": [site.url(f"/p/{i}") for i in range(3)]}, "pool")
        state = await _final_state("scrape-job/high", jid, tmp_path)
        assert state.is_completed(), state.message
        row = get_store(settings).get_job(jid)
        assert row is not None and (row.status, row.urls_done) == ("completed", 3)

        state = await _final_state("scrape-job/high", "job_NOT_THERE", tmp_path)
        assert state.is_failed()
        assert f"no job job_NOT_THERE in the job store {settings.db_url}" in state.message
        assert "SHOAL_DATABASE_URL" in state.message

    with _worker("low", tmp_path, worker_dir, SHOAL_CODE_DIR=str(code)):
        state = await _final_state("scrape-job/low", jid, tmp_path)
    assert state.is_failed()
    stray = (code / ".shoal" / "shoal.db").resolve()
    assert f"no job store at sqlite:///{stray}" in state.message
    assert "SHOAL_DATABASE_URL" in state.message and "SHOAL_RESULTS_URL" in state.message
    assert not (code / ".shoal").exists()
    assert not (worker_dir / ".shoal").exists()
