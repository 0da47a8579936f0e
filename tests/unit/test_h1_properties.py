"""Property: no answer a server can send hurts the transport (``shoal/fetch/_h1.py``).

Hypothesis builds answers (status lines, fields with bad bytes, framing that lies, truncations,
garbage, a second answer or stray bytes after the first, content codings over junk), cuts them
into pieces written with small pauses, and ends the connection in every way (FIN, RST, silence,
kept open). A real server on 127.0.0.1 (``tests.sites.raw.RawServer``) sends them to the real
``Engine``, one connection at a time, and for each:

- the URL ends with a ``FetchResponse`` or a ``FetchError`` within its deadline, and nothing else
  escapes;
- asyncio's loop exception handler is never called (an exception out of ``data_received``
  was logged there as "Fatal error", and a half-closed transport would be too);
- after an answer that failed in the transport (not HTTP, framing, early close, read timeout;
  not a well-framed body that fails to decompress) the next request goes on a new connection
  (the server numbers them), and the next request is only ever given its own answer.

Examples are derandomized with no database, so a CI run is the same run every time.
Run: ``.venv/bin/python -m pytest tests/unit/test_h1_properties.py -q``.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions, FetchResponse
from shoal.settings import Settings
from tests.sites.hostile import Request
from tests.sites.raw import CLOSE, HOLD, RESET, RawServer

_TIMEOUT_S = 1.0
_READ_TIMEOUT_S = 0.2
_SETTINGS = Settings(
    allow_private_networks=True,  # type: ignore[call-arg]
    fetch_retries=0,
    read_timeout_s=_READ_TIMEOUT_S,
    connect_timeout_s=1.0,
)
_OPTS = FetchOptions(respect_robots=False, timeout_s=_TIMEOUT_S)

# ----------------------------------------------------------------------------- answers

_NAMES = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Location",
    b"Set-Cookie",
    b"Content-Encoding",
    b"Content-Type",
    b"Upgrade",
    b"Trailer",
    b"Keep-Alive",
    b"X-Thing",
]
_VALUES = [
    b"0",
    b"3",
    b"10",
    b"-1",
    b"99999999999999999999",
    b"3, 3",
    b"chunked",
    b"gzip",
    b"chunked, gzip",
    b"identity",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"/elsewhere",
    b"br",
    b"deflate",
    b"text/html",
]
_SAFE_NAMES = [b"X-Thing", b"Set-Cookie", b"Content-Type", b"Vary", b"Server", b"Link"]
_bad_bytes = st.binary(min_size=0, max_size=12)


def _mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """``common`` nine times in ten: most answers must get far enough to test framing."""
    return st.integers(0, 9).flatmap(lambda dice: rare if dice == 0 else common)


_name = _mostly(st.sampled_from(_SAFE_NAMES), st.sampled_from(_NAMES) | _bad_bytes)
_value = _mostly(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789 =;,/-", max_size=20).map(str.encode),
    st.sampled_from(_VALUES) | _bad_bytes,
)
_eol = _mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\r\n", b" \r\n"]))


@st.composite
def _status_line(draw: st.DrawFn) -> bytes:
    version = draw(
        _mostly(st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTP/1.1"]))
    )
    status = draw(
        _mostly(
            st.sampled_from([200] * 8 + [100, 101, 103, 204, 301, 302, 304, 404, 500, 503]),
            st.integers(0, 1200),
        )
    )
    digits = str(status).zfill(draw(_mostly(st.just(3), st.sampled_from([1, 4])))).encode()
    reason = draw(_mostly(st.sampled_from([b"OK", b"", b"Whatever It Is"]), _bad_bytes))
    return version + b" " + digits + b" " + reason


def _chunked(body: bytes, pieces: list[int], lie: int) -> bytes:
    out, at = [], 0
    for size in pieces:
        part = body[at : at + size]
        at += size
        if part:
            out.append(b"%x\r\n%s\r\n" % (len(part) + lie, part))
    if at < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
    return b"".join(out) + b"0\r\n\r\n"


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """One answer: mostly well-formed, with the mutations hypothesis chooses."""
    body = draw(st.binary(max_size=300) | st.sampled_from([b"", b"<html>hello</html>"]))
    coding = draw(st.sampled_from([None] * 6 + ["gzip", "gzip", "gzip-junk", "br-junk"]))
    headers: list[tuple[bytes, bytes]] = []
    if coding == "gzip":
        body = gzip.compress(body)
        headers.append((b"Content-Encoding", b"gzip"))
    elif coding is not None:
        headers.append((b"Content-Encoding", coding.split("-")[0].encode()))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "none", "liar"]))
    payload = body
    if framing == "length":
        headers.append((b"Content-Length", str(len(body)).encode()))
    elif framing == "liar":
        delta = draw(st.integers(-5, 5))
        headers.append((b"Content-Length", str(max(0, len(body) + delta)).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        pieces = draw(st.lists(st.integers(1, 64), max_size=6))
        lie = draw(_mostly(st.just(0), st.sampled_from([-1, 1, 100])))
        payload = _chunked(body, pieces, lie)
    headers.extend(draw(st.lists(st.tuples(_name, _value), max_size=3)))
    status_line = draw(_status_line())
    if b" 101 " in status_line and draw(st.booleans()):  # what llhttp takes for an upgrade
        headers += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    order = draw(st.permutations(range(len(headers))))
    eol = draw(_eol)
    head = status_line + b"\r\n"
    head += b"".join(headers[i][0] + b": " + headers[i][1] + eol for i in order)
    return head + b"\r\n" + payload


@dataclass
class Case:
    data: bytes
    cuts: list[int]
    pauses: list[float]
    ending: str | None  # CLOSE, RESET, HOLD, or None: the connection stays open
    notes: list[str] = field(default_factory=list)

    def script(self) -> list[Any]:
        steps: list[Any] = []
        at = 0
        for cut, pause in zip(sorted(set(self.cuts)), self.pauses, strict=False):
            if at < cut < len(self.data):
                steps += [self.data[at:cut], pause]
                at = cut
        steps.append(self.data[at:])
        if self.ending is not None:
            steps.append(self.ending)
        return steps


@st.composite
def _case(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["message"] * 6 + ["interim", "garbage", "truncated", "two"]))
    if kind == "garbage":
        data = draw(st.binary(min_size=1, max_size=200))
    else:
        data = draw(_message())
        if kind == "interim":
            data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: <a>\r\n\r\n" + data
        elif kind == "truncated":
            data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
        elif kind == "two":
            data += draw(_message() | st.binary(min_size=1, max_size=20))
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4))
    pauses = draw(st.lists(st.sampled_from([0.0, 0.001, 0.005]), min_size=4, max_size=4))
    ending = draw(st.sampled_from([None, None, CLOSE, CLOSE, RESET, HOLD]))
    return Case(data, cuts, pauses, ending)


# ----------------------------------------------------------------------------- the property


class _Site:
    """The server for the whole module: ``/a?N`` answers with case N, the rest normally."""

    def __init__(self) -> None:
        self.cases: dict[str, list[Any]] = {}
        self.server = RawServer(self._route)
        self.count = itertools.count()

    def _route(self, req: Request) -> list[Any] | None:
        return self.cases.get(req.target)


@pytest.fixture(scope="module")
def site() -> Iterator[_Site]:
    s = _Site()
    s.server.start()
    yield s
    s.server.stop()
    assert s.server.errors == []


def _conn_of(server: RawServer, target: str) -> int:
    return next(number for number, seen in reversed(server.seen) if seen == target)


async def _exchange(site: _Site, case: Case) -> None:
    n = next(site.count)
    first, second = f"/a?{n}", f"/b?{n}"
    site.cases[first] = case.script()
    loop = asyncio.get_running_loop()
    called: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: called.append(context))
    async with Engine(concurrency=1, settings=_SETTINGS) as engine:
        t0 = time.monotonic()
        try:
            got: FetchResponse | FetchError = await asyncio.wait_for(
                engine.fetch(site.server.url(first), _OPTS), _TIMEOUT_S + 2
            )
        except FetchError as err:
            got = err
        took = time.monotonic() - t0
        assert took < _TIMEOUT_S + 0.5, took
        try:
            after: FetchResponse | FetchError = await asyncio.wait_for(
                engine.fetch(site.server.url(second), _OPTS), _TIMEOUT_S + 2
            )
        except FetchError as err:
            after = err
    await asyncio.sleep(0)  # let closing transports report, if they would
    assert called == [], called
    if isinstance(after, FetchResponse):
        assert after.content == f"answer to {second}".encode()  # only ever its own answer
    if (
        isinstance(got, FetchError)
        and got.code in ("connect", "timeout")
        and not got.message.startswith("could not decode")  # (a body, well framed)
    ):
        # a failed exchange never leaves its connection to the next request
        assert _conn_of(site.server, second) != _conn_of(site.server, first)
        assert isinstance(after, FetchResponse), after.message
    site.cases.pop(first, None)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_case())
def test_no_answer_hurts_the_transport(site: _Site, case: Case) -> None:
    asyncio.run(_exchange(site, case))


def test_the_generator_reaches_the_interesting_cases() -> None:
    """Not vacuous: the cases cover good answers, each way of failing, and each ending."""
    seen: dict[str, int] = {}

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(case=_case())
    def look(case: Case) -> None:
        data = case.data
        for key, hit in (
            ("chunked", b"chunked" in data),
            ("two-answers", data.count(b"HTTP/1.1 ") >= 2),
            ("bare-lf", b"\n" in data.replace(b"\r\n", b"")),
            ("control", any(c < 9 for c in data)),
            ("gzip", b"\x1f\x8b" in data),
            ("cut", len(case.script()) > 2),
            ("hold", case.ending == HOLD),
            ("reset", case.ending == RESET),
            ("open", case.ending is None),
        ):
            if hit:
                seen[key] = seen.get(key, 0) + 1

    look()
    assert set(seen) == {
        "chunked",
        "two-answers",
        "bare-lf",
        "control",
        "gzip",
        "cut",
        "hold",
        "reset",
        "open",
    }, seen
