"""``Engine.navigation_check`` (a rendered page's navigations asked of robots.txt) follows the
plain fetch's robots.txt rules when robots.txt cannot be had (RFC 9309 2.3.1, ``_robots.py``):

- 4xx: "unavailable", everything allowed;
- 5xx and 429: "unreachable", everything disallowed: ``robots_disallowed``;
- a network failure (connection reset or refused, a timeout): disallowed too, reported as that
  failure (``connect``, ``timeout``) with a message saying it was robots.txt's.

Each case is asked of a fresh engine twice, once as a plain fetch of the URL and once as the
check of a navigation to it, against real listeners on 127.0.0.1; the page itself is never
requested when robots.txt refuses it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions, _engine
from shoal.settings import Settings
from tests.sites.hostile import HostileSite


def _settings() -> Settings:
    return Settings(allow_private_networks=True, fetch_retries=0)  # type: ignore[call-arg]


async def _plain(url: str) -> str | None:
    """The plain fetch's outcome: None (fetched) or its error code (and the message checked)."""
    async with Engine(concurrency=2, settings=_settings()) as engine:
        try:
            await engine.fetch(url)
        except FetchError as err:
            _check_message(err)
            return err.code
    return None


async def _navigation(url: str) -> str | None:
    """The navigation check's outcome for the same URL on a fresh engine."""
    async with Engine(concurrency=2, settings=_settings()) as engine:
        check = engine.navigation_check(FetchOptions())
        assert check is not None
        err = await check(url)
        if err is None:
            return None
        assert err.final_url == url  # the row names the URL the page went to
        _check_message(err)
        return err.code


def _check_message(err: FetchError) -> None:
    if err.code == "robots_disallowed":
        assert "robots.txt" in err.message and "disallows" in err.message
    else:  # the failure is robots.txt's, not the page's
        assert err.message.startswith("robots.txt unreachable: "), err.message


@pytest.fixture
def fresh_site() -> Iterator[HostileSite]:
    s = HostileSite().start()
    yield s
    s.stop()


@pytest.mark.parametrize(
    ("robots_status", "code"),
    [
        (404, None),  # unavailable: allowed, /private/ included
        (403, None),
        (500, "robots_disallowed"),
        (503, "robots_disallowed"),
        (429, "robots_disallowed"),
        (0, "connect"),  # the site resets the connection of robots.txt
    ],
)
async def test_an_unusable_robots_txt_is_read_as_a_plain_fetch_reads_it(
    fresh_site: HostileSite, robots_status: int, code: str | None
) -> None:
    fresh_site.robots_status = robots_status
    page = fresh_site.url("/private/x")  # robots.txt's rules, were it readable, refuse it
    assert await _navigation(page) == code
    assert await _plain(page) == code
    # the check asks robots.txt only; the plain fetch gets the page only when allowed
    assert fresh_site.hits["/private/x"] == (1 if code is None else 0)
    assert fresh_site.hits["/robots.txt"] >= 2  # each engine asked for it


async def test_a_refused_connection_to_robots_txt_refuses_the_navigation() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    url = f"http://127.0.0.1:{port}/page"
    assert await _navigation(url) == "connect"
    assert await _plain(url) == "connect"


async def test_a_robots_txt_that_never_answers_times_out_and_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that takes connections and never answers: robots.txt's own timeout (made
    short here) ends the wait, and the URL is refused as ``timeout``."""
    monkeypatch.setattr(_engine, "_ROBOTS_TIMEOUT_S", 1.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes the handshakes; nothing reads or answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/page"
        assert await _navigation(url) == "timeout"
        assert await _plain(url) == "timeout"
