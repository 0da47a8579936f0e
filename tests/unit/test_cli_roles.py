"""``shoal api | worker | services | pool setup``: each role refuses to start without the
settings it shares with the others (exit 2, naming each, creating nothing), and starts with them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.net import free_port

ROLE_SETTINGS = [
    "PREFECT_API_URL",
    "SHOAL_DATABASE_URL",
    "SHOAL_RESULTS_URL",
    "SHOAL_SIGNING_SECRET",
    "SHOAL_PUBLIC_URL",
]


def bare_env(**given: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_"))}
    return {**env, **given}


def shoal(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        cwd=cwd,
        env=bare_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("role", [["worker"], ["api"], ["services"]])
def test_a_role_without_its_settings_exits_2_naming_each(tmp_path: Path, role: list[str]) -> None:
    done = shoal(role, tmp_path)
    assert done.returncode == 2, done
    for name in ROLE_SETTINGS:
        assert name in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # no stray SQLite store, no data folder


def test_the_worker_names_only_what_is_missing(tmp_path: Path) -> None:
    done = shoal(
        ["worker", "--pool", "shoal"],
        tmp_path,
        PREFECT_API_URL="http://127.0.0.1:9/api",
        SHOAL_SIGNING_SECRET="s",
    )
    assert done.returncode == 2, done
    named = {n for n in ROLE_SETTINGS if n in done.stderr}
    assert named == {"SHOAL_DATABASE_URL", "SHOAL_RESULTS_URL", "SHOAL_PUBLIC_URL"}, done.stderr
    assert "SHOAL_CODE_DIR" not in done.stderr  # found: the checkout these tests run from
    assert list(tmp_path.iterdir()) == []


def test_pool_setup_needs_the_prefect_api(tmp_path: Path) -> None:
    done = shoal(["pool", "setup"], tmp_path)
    assert done.returncode == 2 and "PREFECT_API_URL" in done.stderr, done
    assert "SHOAL_DATABASE_URL" not in done.stderr


def test_the_api_role_serves_and_says_why_it_is_not_ready(tmp_path: Path) -> None:
    port, nowhere = free_port(), f"http://127.0.0.1:{free_port()}/api"
    env = bare_env(
        PREFECT_API_URL=nowhere,
        SHOAL_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        SHOAL_RESULTS_URL=str(tmp_path / "results"),
        SHOAL_SIGNING_SECRET="s",
        SHOAL_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "api", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the API did not answer within 60 s"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 503
        assert f"the scheduler (Prefect) at {nowhere} is unreachable" in r.json()["detail"]
    finally:
        proc.send_signal(signal.SIGTERM)  # the role is uvicorn itself (exec): it stops
        proc.wait(30)
