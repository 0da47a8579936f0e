"""End-to-end fixtures: the real stack (``shoal up``) and catalog sites on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack

# Operator limits for the e2e stack: 2,000 URLs inline so the big job fits one request.
E2E_ENV = {"SHOAL_MAX_INLINE_URLS": "2000", "SHOAL_JOB_LIFETIME_S": "3600"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack") / "data", **E2E_ENV).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(stack: Stack):  # type: ignore[no-untyped-def]
    with stack.client() as c:
        yield c


@pytest.fixture
def key(stack: Stack) -> str:
    """The API key of a new account of ``stack``, one a test (the stack is shared)."""
    return stack.keys_create(f"sched-{uuid.uuid4().hex[:8]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
