"""Integration fixtures: flows run under one session-scoped Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from shoal.settings import get_settings


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("integration")
    env = {
        "SHOAL_DATA_DIR": str(data),
        "SHOAL_SIGNING_SECRET": "integration-secret",
        "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
        "SHOAL_PROGRESS_INTERVAL_S": "0.2",
        "PREFECT_LOCAL_STORAGE_PATH": str(data / "prefect-storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry: traffic stays on loopback
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield data
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@pytest.fixture
def shoal_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """``shoal_env(name, value)`` sets an environment variable for one test and makes
    ``get_settings()`` read it; everything is restored after the test."""

    def set_var(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_var
    get_settings.cache_clear()  # monkeypatch restores the variables right after this
