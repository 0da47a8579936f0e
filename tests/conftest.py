"""Fixtures shared by the integration and end-to-end suites."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.pgserver import PgServer
from tests.s3server import _STRAY_AWS_ENV, CREDENTIALS, S3Server
from tests.sites.catalog import NightlyCatalog, Site
from tests.sites.receiver import Receiver
from tests.sites.render import Listener, RenderSite


@pytest.fixture
def site() -> Iterator[Site]:
    """A catalog site on 127.0.0.1, new for each test (its counters start at zero)."""
    s = Site().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def nightly() -> Iterator[Callable[..., NightlyCatalog]]:
    """Starts ``NightlyCatalog(*args, **kwargs)`` sites on 127.0.0.1 for the test (each
    stopped after it)."""
    started: list[NightlyCatalog] = []

    def start(*args: object, **kwargs: object) -> NightlyCatalog:
        started.append(NightlyCatalog(*args, **kwargs).start())  # type: ignore[arg-type]
        return started[-1]

    try:
        yield start
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (``tests/sites/receiver.py``)."""
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def render_site() -> Iterator[RenderSite]:
    """The rendering test site on 127.0.0.1 (``tests/sites/render.py``), one a module."""
    s = RenderSite().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def internal() -> Iterator[Listener]:
    """A listener on 127.0.0.2, the address the guard must keep a page from: it records
    every connection made to it (none, when the guard holds)."""
    listener = Listener("127.0.0.2").start()
    try:
        yield listener
    finally:
        listener.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server on 127.0.0.1 for the session (``.new_database()``)."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's standalone S3 server on 127.0.0.1 for the session (``.endpoint_url``,
    ``.make_bucket()``, ``.client()``, ``.fs()``, ``.env()``); the AWS test credentials are in
    the environment meanwhile (restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in _STRAY_AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        server = S3Server().start()
        try:
            yield server
        finally:
            server.close()


#: test directories whose tests mostly wait (stacks and Prefect servers starting, jobs running,
#: zombie windows), not compute
_WAITING = ("e2e", "integration")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that mostly wait are spread among those that compute: one of each in turn, each
    file's tests kept together and in order (module fixtures stay one).

    The run is pytest-xdist ``--dist loadfile --no-loadscope-reorder`` (pyproject.toml), which
    hands files out in this order to whichever worker is free. Its default reorder puts files
    with the most tests first, so every end-to-end file (1-9 tests each) came last: the run's
    last minutes had every worker waiting on a stack while the CPU idled (14:00 for 17 min of
    CPU on 2 cores). Spread, a worker waiting on a stack leaves the cores to the others. At
    ``-n 3`` this way every end-to-end test passed with the machine at load 6-24 (other work
    beside it)."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    waiting = [f for f in files if f.split("/")[1:2] and f.split("/")[1] in _WAITING]
    computing = [f for f in files if f not in set(waiting)]
    order: list[str] = []
    while waiting or computing:
        for queue in (waiting, computing):
            if queue:
                order.append(queue.pop(0))
    items[:] = [item for f in order for item in files[f]]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Lines tests record as their ``summary`` property (the fuzz run's request count), shown
    at the end of the run: a worker's output is not, under pytest-xdist."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "summary" and getattr(report, "when", "call") == "call":
                    terminalreporter.write_line(str(value))
