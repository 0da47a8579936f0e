"""Conformance of the engine's HTTP/1.1 transport (``shoal/fetch/_h1.py``) against byte-exact
servers on 127.0.0.1 (``tests.sites.raw.RawServer``), through the real ``Engine``.

What a response may do to us, and what we do (RFC 9110/9112; where llhttp is stricter than the
RFC allows, the test says so): chunked framing and its edge cases, trailers, answers we did not
ask for (pipelining we never do), early closes, answers without bodies, interim and 101
answers, heads too large or with too many fields, ambiguous framing, malformed heads, trickling
and stalled peers, TLS failures, and ``http://`` proxies refusing us. Every failure must be a
``FetchError`` with a contract code, and no connection a failure touched is used again.

Run: ``.venv/bin/python -m pytest tests/unit/test_h1_conformance.py -q``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions, FetchResponse
from shoal.settings import Settings
from tests.sites.raw import CLOSE, HOLD, RESET, RawServer, answer, tls_pair

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the engine fixture's loop

_OPTS = FetchOptions(respect_robots=False, timeout_s=15)
_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "allow_private_networks": True,
        "fetch_retries": 0,
        "read_timeout_s": 2.0,
        # a loopback connect is instant, but a loaded CI machine once took over 2 s to
        # accept one (a 304 test failed "ConnectTimeout"); no test here is about connecting
        "connect_timeout_s": 10.0,
    }
    base.update(kw)
    return Settings(**base)


@pytest.fixture
def server() -> Iterator[RawServer]:
    s = RawServer().start()
    yield s
    s.stop()
    assert s.errors == []


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """One connection at a time, so "the next request" can only be on the same connection
    or a new one; the loop's exception handler must never be called."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        async with Engine(concurrency=1, settings=_settings()) as e:
            yield e
    finally:
        loop.set_exception_handler(old)
    assert seen == []


async def _get(engine: Engine, url: str) -> FetchResponse | FetchError:
    try:
        return await engine.fetch(url, _OPTS)
    except FetchError as err:
        return err


async def _body(engine: Engine, url: str) -> bytes:
    got = await _get(engine, url)
    assert isinstance(got, FetchResponse), got
    return got.content


async def _error(engine: Engine, url: str, code: str = "connect") -> FetchError:
    got = await _get(engine, url)
    assert isinstance(got, FetchError), got
    assert got.code == code, got.message
    return got


async def _next_is_fresh(engine: Engine, server: RawServer) -> None:
    """The next request is answered as itself, on a connection of its own."""
    used = {number for number, _ in server.seen}
    assert await _body(engine, server.url("/next")) == b"answer to /next"
    assert server.seen[-1] == (max(used) + 1, "/next")


async def _next_is_reused(engine: Engine, server: RawServer) -> None:
    last = server.seen[-1][0]
    assert await _body(engine, server.url("/next")) == b"answer to /next"
    assert server.seen[-1] == (last, "/next")


# ----------------------------------------------------------------------------- chunked


async def test_chunk_extensions_are_ignored(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [_CHUNKED + b'3;name=value;q="a b"\r\nabc\r\n2;x\r\nde\r\n0;end\r\n\r\n']
    assert await _body(engine, server.url("/x")) == b"abcde"
    await _next_is_reused(engine, server)


async def test_only_the_last_chunk(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [_CHUNKED + b"0\r\n\r\n"]
    assert await _body(engine, server.url("/x")) == b""
    await _next_is_reused(engine, server)


async def test_many_one_byte_chunks_in_separate_writes(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [_CHUNKED, *(b"1\r\n%c\r\n" % c for c in b"abcdefghij"), b"0\r\n\r\n"]
    assert await _body(engine, server.url("/x")) == b"abcdefghij"
    await _next_is_reused(engine, server)


@pytest.mark.parametrize(
    "chunks",
    [
        b"ffffffffffffffffffff\r\nabc\r\n",  # size overflow
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",  # more data than the size said
        b" 3\r\nabc\r\n0\r\n\r\n",
    ],
)
async def test_invalid_chunk_sizes_are_invalid_responses(
    server: RawServer, engine: Engine, chunks: bytes
) -> None:
    server.routes["/x"] = [_CHUNKED + chunks, HOLD]
    err = await _error(engine, server.url("/x"))
    assert "invalid HTTP response" in err.message
    await _next_is_fresh(engine, server)


@pytest.mark.parametrize(
    "tail",
    [b"0\r\n", b"0\r\n\r", b"3\r\nab", b"5\r\nabc"],
    ids=["no-final-crlf", "half-final-crlf", "mid-chunk", "short-chunk"],
)
async def test_chunked_body_cut_by_the_close_is_an_error(
    server: RawServer, engine: Engine, tail: bytes
) -> None:
    server.routes["/x"] = [_CHUNKED + b"2\r\nok\r\n" + tail, CLOSE]
    err = await _error(engine, server.url("/x"))
    assert "closed the connection" in err.message
    await _next_is_fresh(engine, server)


async def test_chunked_body_missing_its_final_crlf_on_an_open_connection_times_out(
    server: RawServer,
) -> None:
    server.routes["/x"] = [_CHUNKED + b"2\r\nok\r\n0\r\n", HOLD]
    async with Engine(concurrency=1, settings=_settings(read_timeout_s=0.3)) as engine:
        t0 = time.monotonic()
        await _error(engine, server.url("/x"), "timeout")
        assert time.monotonic() - t0 < 1.5
        await _next_is_fresh(engine, server)


async def test_trailers_are_read_and_not_merged_into_the_head(
    server: RawServer, engine: Engine
) -> None:
    server.routes["/x"] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 42\r\nLocation: /evil\r\n\r\n"
    ]
    got = await _get(engine, server.url("/x"))
    assert isinstance(got, FetchResponse)
    assert got.content == b"abc"
    assert "x-sum" not in got.headers and "location" not in got.headers
    await _next_is_reused(engine, server)


async def test_endless_trailers_are_bounded(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [_CHUNKED + b"0\r\n" + b"X-T: 1\r\n" * 600 + b"\r\n"]
    err = await _error(engine, server.url("/x"))
    assert "header fields" in err.message


# ----------------------------------------------------------------------------- no pipelining


async def test_a_second_answer_to_one_request_is_never_given_to_the_next(
    server: RawServer, engine: Engine
) -> None:
    """We never pipeline; a server that answers twice has its second answer dropped with the
    connection, not read as the answer to the next request."""
    server.routes["/x"] = [answer("/x") + answer("/forged")]
    assert await _body(engine, server.url("/x")) == b"answer to /x"
    await _next_is_fresh(engine, server)


async def test_bytes_after_a_complete_answer_close_the_connection(
    server: RawServer, engine: Engine
) -> None:
    server.routes["/x"] = [answer("/x") + b"garbage"]
    assert await _body(engine, server.url("/x")) == b"answer to /x"
    await _next_is_fresh(engine, server)


async def test_an_answer_sent_to_an_idle_connection_closes_it(
    server: RawServer, engine: Engine
) -> None:
    server.routes["/x"] = [answer("/x"), 0.05, answer("/unasked")]
    assert await _body(engine, server.url("/x")) == b"answer to /x"
    deadline = time.monotonic() + 5
    while server.closed_by_client == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.closed_by_client == 1  # the client closed the idle connection
    await _next_is_fresh(engine, server)


async def test_a_200_with_connection_close_is_not_reused(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [answer("/x", extra=b"Connection: close\r\n"), HOLD]
    assert await _body(engine, server.url("/x")) == b"answer to /x"
    await _next_is_fresh(engine, server)


# ----------------------------------------------------------------------------- early close


@pytest.mark.parametrize(
    "script",
    [
        [CLOSE],
        [RESET],
        [b"HTTP/1.1 200 OK\r\nContent-Le", CLOSE],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0.02, RESET],
    ],
    ids=["before-head", "reset-before-head", "mid-head", "content-length-short", "reset-mid-body"],
)
async def test_early_close_is_a_connect_error(
    server: RawServer, engine: Engine, script: list[Any]
) -> None:
    server.routes["/x"] = script
    err = await _error(engine, server.url("/x"))
    assert "closed" in err.message or "reset" in err.message.lower()
    await _next_is_fresh(engine, server)


async def test_a_body_without_length_ends_with_the_connection(
    server: RawServer, engine: Engine
) -> None:
    server.routes["/x"] = [b"HTTP/1.1 200 OK\r\n\r\nuntil the end", CLOSE]
    assert await _body(engine, server.url("/x")) == b"until the end"
    await _next_is_fresh(engine, server)


async def test_http_1_0_answer_is_read_and_not_reused(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", HOLD]
    assert await _body(engine, server.url("/x")) == b"abc"
    await _next_is_fresh(engine, server)


# ----------------------------------------------------------------------------- no body


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_204_and_304_have_no_body_and_keep_the_connection(
    server: RawServer, engine: Engine, head: bytes
) -> None:
    """The transport only sends GET (no HEAD): 204 and 304 are the answers without a body;
    a Content-Length on a 304 is the representation's, not this message's (RFC 9110 8.6)."""
    server.routes["/x"] = [head]
    got = await _get(engine, server.url("/x"))
    assert isinstance(got, FetchResponse), got
    assert (got.status, got.content) == (int(head[9:12]), b"")
    await _next_is_reused(engine, server)


async def test_a_204_with_a_body_anyway_drops_the_connection(
    server: RawServer, engine: Engine
) -> None:
    server.routes["/x"] = [b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"]
    got = await _get(engine, server.url("/x"))
    assert isinstance(got, FetchResponse) and got.content == b""
    await _next_is_fresh(engine, server)


# ----------------------------------------------------------------------------- 1xx and 101


async def test_interim_answers_are_skipped(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\n",
        answer("/x"),
    ]
    got = await _get(engine, server.url("/x"))
    assert isinstance(got, FetchResponse) and got.content == b"answer to /x"
    assert "link" not in got.headers
    await _next_is_reused(engine, server)


async def test_endless_interim_answers_are_bounded(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [b"HTTP/1.1 100 Continue\r\n\r\n" * 3000, HOLD]
    err = await _error(engine, server.url("/x"))
    assert "larger than" in err.message
    await _next_is_fresh(engine, server)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_an_unasked_protocol_switch_is_an_invalid_response(
    server: RawServer, engine: Engine, head: bytes
) -> None:
    server.routes["/x"] = [head + b"\x81\x05hello", HOLD]
    got = await _get(engine, server.url("/x"))
    if head.startswith(b"HTTP/1.1 101"):
        assert isinstance(got, FetchError) and got.code == "connect"
        assert "101" in got.message
    else:  # a 200 offering an upgrade: its 2-byte body is the answer
        assert isinstance(got, FetchResponse) and got.content == b"\x81\x05"
    await _next_is_fresh(engine, server)


# ----------------------------------------------------------------------------- heads


async def test_a_head_over_64_kib_is_refused(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", HOLD]
    err = await _error(engine, server.url("/x"))
    assert "larger than" in err.message
    await _next_is_fresh(engine, server)


async def test_a_head_over_64_kib_trickled_is_refused(server: RawServer, engine: Engine) -> None:
    piece = b"X-Filler: " + b"f" * 8000 + b"\r\n"
    server.routes["/x"] = [b"HTTP/1.1 200 OK\r\n", *([piece, 0.001] * 10), HOLD]
    err = await _error(engine, server.url("/x"))
    assert "larger than" in err.message


async def test_too_many_header_fields_are_refused(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 501 + b"\r\n", HOLD]
    err = await _error(engine, server.url("/x"))
    assert "more than 500 header fields" in err.message
    server.routes["/y"] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"A: b\r\n" * 400 + b"\r\n"
    ]
    got = await _get(engine, server.url("/y"))
    assert isinstance(got, FetchResponse) and len(got.headers.getall("a")) == 400


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", "whitespace"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "Duplicate"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Duplicate"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", "transfer coding"),
        (b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", "CR"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", "header value"),
        (b"HTTP/1.1 200 OK\r\nX-\x00A: ab\r\nContent-Length: 0\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nX-A : ab\r\nContent-Length: 0\r\n\r\n", "header"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "status"),
        (b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", "status"),
        (b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", "status"),
        (b"SPDY/9 200 OK\r\n\r\n", "HTTP/"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "HTTP/"),
        (b"HTTP/1.1 302 Found\r\nLocation: /a\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n", "Loc"),
    ],
    ids=[
        "obs-fold",
        "two-equal-lengths",
        "two-lengths",
        "length-list",
        "negative-length",
        "te-and-length",
        "te-gzip",
        "te-chunked-not-last",
        "bare-lf",
        "nul-in-value",
        "nul-in-name",
        "space-before-colon",
        "four-digit-status",
        "status-below-100",
        "no-status",
        "not-http",
        "tls-to-http",
        "two-locations",
    ],
)
async def test_malformed_or_ambiguous_heads_are_invalid_responses(
    server: RawServer, engine: Engine, head: bytes, why: str
) -> None:
    """llhttp (strict) refuses obs-fold, bare LF and duplicate Content-Length even when equal,
    where RFC 9112 would let a user agent unfold (5.2), accept LF (2.2) or merge (6.3): an
    ambiguity in framing is a desync waiting to happen, so we refuse like aiohttp does."""
    server.routes["/x"] = [head, HOLD]
    err = await _error(engine, server.url("/x"))
    assert "invalid HTTP response" in err.message or why in err.message
    assert why.lower() in err.message.lower(), err.message
    await _next_is_fresh(engine, server)


async def test_repeated_fields_stay_apart(server: RawServer, engine: Engine) -> None:
    server.routes["/x"] = [
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1, b\r\nset-cookie: c=2\r\nVary: A\r\nVary: B\r\n"
        b"Location: /same\r\nLocation: /same\r\nContent-Length: 0\r\n\r\n"
    ]
    got = await _get(engine, server.url("/x"))
    assert isinstance(got, FetchResponse)
    assert got.headers.getall("Set-Cookie") == ["a=1, b", "c=2"]
    assert got.headers.getall("vary") == ["A", "B"]


# ----------------------------------------------------------------------------- slow peers


async def test_a_trickled_answer_within_the_read_timeout_is_read(
    server: RawServer, engine: Engine
) -> None:
    data = answer("/x")
    server.routes["/x"] = [step for byte in data for step in (bytes([byte]), 0.002)]
    assert await _body(engine, server.url("/x")) == b"answer to /x"
    await _next_is_reused(engine, server)


@pytest.mark.parametrize(
    "script",
    [
        [HOLD],
        [b"HTTP/1.1 200 OK\r\nContent-", HOLD],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", HOLD],
        [_CHUNKED + b"3\r\nabc\r\n", HOLD],
    ],
    ids=["silent", "mid-head", "mid-body", "mid-chunked"],
)
async def test_a_stalled_peer_ends_at_the_read_timeout(
    server: RawServer, script: list[Any]
) -> None:
    server.routes["/x"] = script
    async with Engine(concurrency=1, settings=_settings(read_timeout_s=0.3)) as engine:
        t0 = time.monotonic()
        err = await _error(engine, server.url("/x"), "timeout")
        took = time.monotonic() - t0
        await _next_is_fresh(engine, server)
    assert 0.25 < took < 1.5, took
    assert "ReadTimeout" in err.message


async def test_a_trickle_slower_than_the_deadline_ends_at_the_deadline(
    server: RawServer,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    server.routes["/x"] = [head, *([b"x", 0.05] * 1000)]
    async with Engine(concurrency=1, settings=_settings(read_timeout_s=0.5)) as engine:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as info:
            await engine.fetch(server.url("/x"), FetchOptions(respect_robots=False, timeout_s=1))
        took = time.monotonic() - t0
        await _next_is_fresh(engine, server)
    assert info.value.code == "timeout"
    assert 0.9 < took < 1.5, took


# ----------------------------------------------------------------------------- TLS


async def _tls_error(server: RawServer, client_context: Any) -> FetchError:
    async with Engine(concurrency=1, settings=_settings(), ssl_context=client_context) as engine:
        return await _error(engine, server.url("/x"), "tls")


async def test_tls_trusted_certificate_works() -> None:
    pair = tls_pair(("127.0.0.1",))
    with RawServer(tls=pair.server) as server:
        async with Engine(concurrency=1, settings=_settings(), ssl_context=pair.client) as e:
            assert await _body(e, server.url("/x")) == b"answer to /x"


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("wrong-host", ("match", "mismatch")),
        ("expired", ("expired",)),
        ("self-signed", ("self-signed", "self signed", "unable to get local issuer")),
    ],
)
async def test_tls_certificate_failures_are_tls_errors(kind: str, words: tuple[str, ...]) -> None:
    pair = {
        "wrong-host": lambda: tls_pair(("other.example", "10.9.8.7")),
        "expired": lambda: tls_pair(("127.0.0.1",), expired=True),
        "self-signed": lambda: tls_pair(("127.0.0.1",), self_signed=True),
    }[kind]()
    with RawServer(tls=pair.server) as server:
        err = await _tls_error(server, pair.client)
        assert server.seen == []  # no request was sent
    assert any(w in err.message.lower() for w in words), err.message


async def test_https_to_a_plain_http_server_is_a_tls_error() -> None:
    pair = tls_pair(("127.0.0.1",))
    with RawServer(greeting=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as plain:
        url = plain.url("/x").replace("http://", "https://")
        async with Engine(concurrency=1, settings=_settings(), ssl_context=pair.client) as e:
            got = await _get(e, url)
    assert isinstance(got, FetchError) and got.code == "tls", got


# ----------------------------------------------------------------------------- http:// proxies


def _proxy_engine(proxy: RawServer, **kw: Any) -> Engine:
    return Engine(
        concurrency=1,
        settings=_settings(),
        proxies={"dc": [f"http://u:p@127.0.0.1:{proxy.port}"]},
        **kw,
    )


_PROXIED = FetchOptions(respect_robots=False, timeout_s=5, proxy_type="dc")


async def test_http_target_through_the_proxy_in_absolute_form() -> None:
    with RawServer() as proxy:
        async with _proxy_engine(proxy) as engine:
            got = await engine.fetch("http://site.test/page", _PROXIED)
    assert got.content == b"answer to http://site.test/page"
    assert proxy.seen == [(1, "http://site.test/page")]


async def test_proxy_407_to_an_http_target_is_a_proxy_error() -> None:
    refuse = [b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"]
    with RawServer(lambda req: refuse) as proxy:
        async with _proxy_engine(proxy) as engine:
            with pytest.raises(FetchError) as info:
                await engine.fetch("http://site.test/page", _PROXIED)
    assert (info.value.code, info.value.http_status) == ("proxy", 407)


@pytest.mark.parametrize(
    "script",
    [
        [b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", HOLD],
        [b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", HOLD],
        [b"HTTP/1.1 502 Bad Gateway\r\n\r\n", CLOSE],
        [CLOSE],
        [b"NOT HTTP AT ALL\r\n\r\n", HOLD],
    ],
    ids=["403", "407", "502", "closed", "garbage"],
)
async def test_a_refused_connect_tunnel_is_a_proxy_error(script: list[Any]) -> None:
    with RawServer(lambda req: script) as proxy:
        async with _proxy_engine(proxy) as engine:
            with pytest.raises(FetchError) as info:
                await engine.fetch("https://site.test/page", _PROXIED)
        assert proxy.seen == [(1, "site.test:443")]
    assert info.value.code == "proxy", info.value.message
