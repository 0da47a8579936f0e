"""Fixtures shared by the integration and end-to-end suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sites.catalog import Site


@pytest.fixture
def site() -> Iterator[Site]:
    """A catalog site on 127.0.0.1, new for each test (its counters start at zero)."""
    s = Site().start()
    try:
        yield s
    finally:
        s.stop()
