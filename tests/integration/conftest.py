"""Integration fixtures: flows run under one session-scoped Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
