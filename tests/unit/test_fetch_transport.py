"""The engine's own HTTP/1.1 transport (``shoal/fetch/_h1.py``) against real servers on 127.0.0.1.

HTTPS with a certificate authority made for the test, through a real CONNECT proxy too;
keep-alive reuse; a server dropping an idle connection as it is reused; answers framed by
EOF, with an interim ``100``, with an oversized head, or not HTTP at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions
from shoal.settings import Settings
from tests.sites.hostile import HostileSite
from tests.sites.proxy import ForwardProxy
from tests.sites.tls import TestCA

_NO_ROBOTS = FetchOptions(respect_robots=False)


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {"allow_private_networks": True, "fetch_retries": 2}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def site() -> Iterator[HostileSite]:
    s = HostileSite().start()
    yield s
    s.stop()


async def _fail(engine: Engine, url: str, options: FetchOptions = _NO_ROBOTS) -> FetchError:
    with pytest.raises(FetchError) as info:
        await engine.fetch(url, options)
    return info.value


# ----------------------------------------------------------------------------- TLS


async def test_https_page_with_a_trusted_certificate(ca: TestCA, tls_site: HostileSite) -> None:
    async with Engine(
        concurrency=2, settings=_settings(), ssl_context=ca.client_context()
    ) as engine:
        resp = await engine.fetch(tls_site.url("/ok"))  # robots.txt over HTTPS too
        redirected = await engine.fetch(tls_site.url("/redirect?n=2"), _NO_ROBOTS)
    assert (resp.status, resp.final_url) == (200, tls_site.url("/ok"))
    assert "<title>/ok</title>" in resp.text
    assert tls_site.hits["/robots.txt"] == 1
    assert redirected.final_url.startswith("https://127.0.0.1:")
    assert "redirected" in redirected.text


async def test_untrusted_certificate_is_tls_and_not_retried(tls_site: HostileSite) -> None:
    before = tls_site.hits["/ok"]
    async with Engine(concurrency=2, settings=_settings()) as engine:  # the system's CAs
        err = await _fail(engine, tls_site.url("/ok"))
    assert err.code == "tls"
    assert err.attempts == 1
    assert "certificate" in err.message.lower()
    assert tls_site.hits["/ok"] == before  # the handshake failed: no request was sent


async def test_https_through_a_connect_tunnel(ca: TestCA, tls_site: HostileSite) -> None:
    with ForwardProxy(require_auth=("user", "pass")) as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.auth_url]},
            ssl_context=ca.client_context(),
        ) as engine:
            opts = FetchOptions(proxy_type="datacenter", respect_robots=False)
            resp = await engine.fetch(tls_site.url("/ok?via=tunnel"), opts)
        assert resp.status == 200
        assert "<title>/ok</title>" in resp.text
        assert proxy.tunnels == 1
        assert proxy.targets == [f"127.0.0.1:{tls_site.port}"]  # the proxy saw only CONNECT


async def test_a_tunnel_the_proxy_refuses_is_a_proxy_error(
    ca: TestCA, tls_site: HostileSite
) -> None:
    with ForwardProxy(require_auth=("user", "pass")) as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url]},  # no credentials: 407 to CONNECT
            ssl_context=ca.client_context(),
        ) as engine:
            err = await _fail(engine, tls_site.url("/ok"), FetchOptions(proxy_type="datacenter"))
            assert err.code == "proxy"
            assert "407" in err.message
            assert engine._pools["datacenter"].benched(proxy.url) > 0
        assert proxy.rejected == 1


# ----------------------------------------------------------------------------- connections


async def test_sequential_requests_share_one_connection(site: HostileSite) -> None:
    async with Engine(concurrency=1, settings=_settings()) as engine:
        for i in range(20):
            assert (await engine.fetch(site.url(f"/ok?i={i}"), _NO_ROBOTS)).status == 200
    assert site.connections == 1


async def test_concurrent_requests_open_at_most_the_cap(site: HostileSite) -> None:
    import asyncio

    async with Engine(concurrency=4, settings=_settings()) as engine:
        for _ in range(3):
            await asyncio.gather(
                *(engine.fetch(site.url(f"/ok?i={i}"), _NO_ROBOTS) for i in range(16))
            )
    assert 1 <= site.connections <= 4


async def test_an_idle_connection_dropped_on_reuse_is_replaced_silently(
    site: HostileSite,
) -> None:
    async with Engine(concurrency=1, settings=_settings()) as engine:
        first = await engine.fetch(site.url("/then-drop"), _NO_ROBOTS)
        second = await engine.fetch(site.url("/ok?after=drop"), _NO_ROBOTS)
    assert (first.status, second.status) == (200, 200)
    assert second.attempts == 1  # not a retry of the URL: the request was sent again at once
    assert site.hits_full["/ok?after=drop"] == 2  # dropped unanswered, then answered
    assert site.connections == 2


async def test_a_body_that_ends_with_the_connection(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        resp = await engine.fetch(site.url("/until-close"), _NO_ROBOTS)
        again = await engine.fetch(site.url("/ok"), _NO_ROBOTS)  # a new connection
    assert resp.status == 200
    assert resp.text.count("y") >= 30_000
    assert resp.text.rstrip().endswith("</html>")
    assert again.status == 200


async def test_an_interim_100_is_skipped(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        resp = await engine.fetch(site.url("/interim"), _NO_ROBOTS)
    assert resp.status == 200
    assert "after interim" in resp.text


async def test_a_head_too_large_or_not_http_is_a_connect_error(site: HostileSite) -> None:
    async with Engine(concurrency=2, settings=_settings(fetch_retries=0)) as engine:
        big = await _fail(engine, site.url("/huge-head?kb=100"))
        garbage = await _fail(engine, site.url("/garbage"))
        small = await engine.fetch(site.url("/huge-head?kb=20"), _NO_ROBOTS)
    assert (big.code, garbage.code) == ("connect", "connect")
    assert "head larger than" in big.message
    assert "invalid HTTP response" in garbage.message
    assert small.status == 200
    assert small.headers["x-filler-19"] == "f" * 1000


def test_an_operator_header_with_a_line_break_is_refused_at_startup() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(default_headers={"X-Evil": "a\r\nX-Injected: 1"})
    assert "default_headers" in str(info.value)
    with pytest.raises(ValidationError, match="user_agent"):
        Settings(user_agent="Bot\r\nX-Injected: 1")


async def test_a_per_url_header_with_a_line_break_is_refused_not_sent(site: HostileSite) -> None:
    """The API refuses these (``422``); the engine refuses them too rather than send them."""
    async with Engine(concurrency=2, settings=_settings()) as engine:
        err = await _fail(
            engine, site.url("/headers"), FetchOptions(headers={"X-Evil": "a\r\nX-Injected: 1"})
        )
    assert err.code == "invalid_url"
    assert "control characters (CR, LF" in err.message
    assert site.hits["/headers"] == 0


# ----------------------------------------------------------------------------- framing (issue 12)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Length": "5"},
        {"content-length": "0"},
        {"Transfer-Encoding": "chunked"},
        {"Host": "elsewhere.example"},
        {"Connection": "close"},
        {"Upgrade": "websocket"},
        {"TE": "trailers"},
        {"Trailer": "X-T"},
        {"Keep-Alive": "timeout=5"},
        {"Proxy-Authorization": "Basic eDp5"},
        {"Proxy-Connection": "keep-alive"},
        {"X-Nul": "a\x00b"},
        {"X-Del": "a\x7fb"},
        {"X-Bell": "a\x07b"},
        {"X-Cr": "a\rContent-Length: 5"},
        {"X-Lf": "a\nContent-Length: 5"},
        {"X-Bad Name": "1"},
        {"X-Bad:Name": "1"},
        {"X-Bad\x00Name": "1"},
    ],
)
async def test_framing_headers_are_never_sent_and_the_pooled_connection_stays_in_step(
    site: HostileSite, headers: dict[str, str]
) -> None:
    """A GET that said ``Content-Length: 5`` would leave the server waiting for a body and
    read the first five bytes of the next request on that keep-alive connection as it: the
    transport refuses such headers (and control characters) before a byte is sent, and the
    engine's next request on the pooled connection is answered as itself."""
    settings = _settings(fetch_retries=0, read_timeout_s=1.0)  # the old code waited here
    async with Engine(concurrency=1, settings=settings) as engine:
        first = await engine.fetch(site.url("/ok?before"), _NO_ROBOTS)
        err = await _fail(
            engine, site.url("/headers?bad"), FetchOptions(headers=headers, respect_robots=False)
        )
        after = await engine.fetch(site.url("/headers?after"), _NO_ROBOTS)
    assert first.status == 200
    assert err.code == "invalid_url"
    assert "invalid request header" in err.message
    assert site.hits_full["/headers?bad"] == 0  # refused, not sent
    sent = json.loads(after.text)
    assert "content-length" not in sent and "transfer-encoding" not in sent
    assert site.log[-1].target == "/headers?after"
    assert site.connections == 1  # the same keep-alive connection, still in step


def test_header_block_refuses_what_would_frame_or_inject() -> None:
    from shoal.fetch._h1 import header_block

    assert header_block({"X-Tab": "a\tb", "Accept": "*/*"}) == b"X-Tab: a\tb\r\nAccept: */*\r\n"
    for name, value in (
        ("Content-Length", "1"),
        ("HOST", "x"),
        ("proxy-anything", "x"),
        ("X-A", "a\r\nb"),
        ("X-A", "\x1f"),
        ("X-A", "\x7f"),
        ("", "x"),
        ("X A", "x"),
    ):
        with pytest.raises(ValueError):
            header_block({name: value})


async def test_101_switching_protocols_is_an_invalid_response_not_a_loop_error(
    site: HostileSite,
) -> None:
    """httptools raises ``HttpParserUpgrade`` (no ``HttpParserError``) on a 101: it escaped
    ``data_received`` and asyncio logged "Fatal error: protocol.data_received() call failed"
    through the loop's exception handler. Now it is the URL's ``connect`` error, and the
    connection is dropped (the next request opens another)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        async with Engine(concurrency=1, settings=_settings(fetch_retries=0)) as engine:
            err = await _fail(engine, site.url("/switch"))
            before = site.connections
            ok = await engine.fetch(site.url("/ok?after-switch"), _NO_ROBOTS)
    finally:
        loop.set_exception_handler(old)
    assert err.code == "connect"
    assert "101" in err.message
    assert seen == []
    assert ok.status == 200
    assert site.connections == before + 1


async def test_100_and_103_interim_answers_are_skipped(site: HostileSite) -> None:
    async with Engine(concurrency=1, settings=_settings()) as engine:
        resp = await engine.fetch(site.url("/early-hints"), _NO_ROBOTS)
        again = await engine.fetch(site.url("/ok?after-hints"), _NO_ROBOTS)
    assert resp.status == 200
    assert "after early hints" in resp.text
    assert "link" not in resp.headers  # the 103's fields are not the answer's
    assert again.status == 200


async def test_repeated_fields_stay_separate_values(site: HostileSite) -> None:
    """Two ``Set-Cookie`` fields were joined with ", " (unreadable: a cookie may hold a
    comma); now they are two values of a case-insensitive multidict."""
    async with Engine(concurrency=1, settings=_settings()) as engine:
        resp = await engine.fetch(site.url("/cookies"), _NO_ROBOTS)
    assert resp.headers.getall("set-cookie") == ["a=1; Path=/", "b=2, c=3; Path=/"]
    assert resp.headers["Content-Type"] == resp.headers["content-type"]


async def test_two_different_locations_are_invalid_and_two_equal_ones_followed(
    site: HostileSite,
) -> None:
    async with Engine(concurrency=1, settings=_settings(fetch_retries=0)) as engine:
        err = await _fail(engine, site.url("/two-locations?same=0"))
        same = await engine.fetch(site.url("/two-locations?same=1"), _NO_ROBOTS)
    assert err.code == "connect"
    assert "Location" in err.message
    assert site.hits_full["/ok?b"] == 0 and site.hits_full["/ok?a"] >= 1
    assert (same.status, same.final_url) == (200, site.url("/ok?a"))


async def test_two_content_lengths_are_invalid(site: HostileSite) -> None:
    async with Engine(concurrency=1, settings=_settings(fetch_retries=0)) as engine:
        err = await _fail(engine, site.url("/two-lengths"))
    assert err.code == "connect"
    assert "Content-Length" in err.message


def test_an_operator_framing_header_stops_the_engine_at_construction() -> None:
    """``default_headers`` go in every request: one that frames the message is refused when
    the engine is made, not sent (Settings refuses them too, through ``contract``)."""
    settings = _settings().model_copy(update={"default_headers": {"Connection": "close"}})
    with pytest.raises(ValueError, match="hop-by-hop or framing"):
        Engine(concurrency=1, settings=settings)
