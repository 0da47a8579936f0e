"""The test sites misbehave exactly as advertised (checked with the standard library only)."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.sites.hostile import (
    COMPRESSED_PAGE,
    DEFAULT_ROBOTS,
    ENC_PAGES,
    JSON_DOC,
    MIB,
    PDF_BYTES,
    PNG_BYTES,
    HostileSite,
)
from tests.sites.proxy import ForwardProxy, dead_proxy_url


@pytest.fixture(scope="module")
def site() -> Iterator[HostileSite]:
    with HostileSite() as s:
        yield s
        assert not s.errors


def get(
    site: HostileSite, path: str, timeout: float = 5.0, method: str = "GET"
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def test_ok_page_and_hit_counters(site: HostileSite) -> None:
    before = site.hits["/ok"]
    resp, body = get(site, "/ok?x=1")
    assert resp.status == 200 and b"<title>/ok</title>" in body
    assert site.hits["/ok"] == before + 1
    assert site.hits_full["/ok?x=1"] >= 1
    assert site.log[-1].target == "/ok?x=1"


def test_keep_alive_serves_several_requests_on_one_connection(site: HostileSite) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/ok")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
    conn.close()


def test_slow_headers_send_nothing_until_the_delay(site: HostileSite) -> None:
    with pytest.raises(TimeoutError):
        get(site, "/slow-headers?s=0.5", timeout=0.2)
    t0 = time.monotonic()
    resp, _ = get(site, "/slow-headers?s=0.3")
    assert resp.status == 200 and time.monotonic() - t0 >= 0.28


def test_drip_sends_headers_at_once_then_a_byte_at_a_time(site: HostileSite) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    t0 = time.monotonic()
    conn.request("GET", "/drip?bytes=5&every=0.1")
    resp = conn.getresponse()
    headers_at = time.monotonic() - t0
    assert resp.status == 200 and resp.getheader("Content-Length") == "5"
    first = resp.read(1)
    body = first + resp.read()
    elapsed = time.monotonic() - t0
    conn.close()
    assert headers_at < 0.1
    assert body == b"xxxxx" and elapsed >= 0.38


def test_retry_after_then_ok(site: HostileSite) -> None:
    path = f"/retry-after?n=2&s=3&t={time.monotonic_ns()}"
    for _ in range(2):
        resp, _ = get(site, path)
        assert resp.status == 429 and resp.getheader("Retry-After") == "3"
    assert get(site, path)[0].status == 200


def test_flaky_then_ok(site: HostileSite) -> None:
    path = f"/flaky?n=1&status=503&t={time.monotonic_ns()}"
    assert get(site, path)[0].status == 503
    assert get(site, path)[0].status == 200
    assert get(site, f"/flaky?n=1&t={time.monotonic_ns()}")[0].status == 500


def test_reset_is_a_connection_reset(site: HostileSite) -> None:
    with pytest.raises(ConnectionResetError):
        get(site, "/reset")


def test_reset_mid_body(site: HostileSite) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    conn.request("GET", "/reset-mid")
    resp = conn.getresponse()
    assert resp.status == 200
    length = int(resp.getheader("Content-Length"))
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        resp.read()
    conn.close()
    assert length > 10_000


def test_redirects(site: HostileSite) -> None:
    resp, _ = get(site, "/redirect-loop")
    assert resp.status == 302 and resp.getheader("Location") == "/redirect-loop/b"
    resp, _ = get(site, "/redirect-loop/b")
    assert resp.getheader("Location") == "/redirect-loop"
    resp, _ = get(site, "/redirect?n=2&status=301")
    assert resp.status == 301 and resp.getheader("Location") == "/redirect?n=1&status=301"
    with urllib.request.urlopen(site.url("/redirect?n=3"), timeout=5) as r:
        assert r.status == 200 and r.url.endswith("/redirect?n=0&status=302")
    target = site.url("/ok")
    resp, _ = get(site, "/redirect-to?status=307&url=" + quote(target, safe=""))
    assert resp.status == 307 and resp.getheader("Location") == target
    with pytest.raises(urllib.error.HTTPError, match="redirect"):
        urllib.request.urlopen(site.url("/redirect-loop"), timeout=5)


@pytest.mark.parametrize("chunked", [False, True])
def test_huge_streams_the_asked_size(site: HostileSite, chunked: bool) -> None:
    resp, body = get(site, "/huge?mb=3" + ("&chunked=1" if chunked else ""))
    assert resp.status == 200 and len(body) == 3 * MIB
    assert (resp.getheader("Content-Length") is None) == chunked


def test_gzip_bomb_inflates_to_the_asked_size(site: HostileSite) -> None:
    resp, body = get(site, "/gzip-bomb?mb=20")
    assert resp.getheader("Content-Encoding") == "gzip"
    assert len(body) < 100_000
    d = zlib.decompressobj(31)
    total = 0
    chunk = d.decompress(body, MIB)
    while chunk:
        total += len(chunk)
        assert not chunk.strip(b"\0")
        chunk = d.decompress(d.unconsumed_tail, MIB)
    assert total == 20 * MIB


def test_compressed_pages(site: HostileSite) -> None:
    resp, body = get(site, "/gzip")
    assert resp.getheader("Content-Encoding") == "gzip"
    assert zlib.decompress(body, 31).decode() == COMPRESSED_PAGE
    resp, body = get(site, "/deflate")
    assert resp.getheader("Content-Encoding") == "deflate"
    assert zlib.decompress(body).decode() == COMPRESSED_PAGE
    resp, body = get(site, "/br")
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        assert resp.status == 501
    else:
        assert brotli.decompress(body).decode() == COMPRESSED_PAGE


@pytest.mark.parametrize("path", sorted(ENC_PAGES))
def test_encoding_pages_serve_their_bytes(site: HostileSite, path: str) -> None:
    resp, body = get(site, path)
    assert (body, resp.getheader("Content-Type")) == ENC_PAGES[path]


def test_non_html(site: HostileSite) -> None:
    resp, body = get(site, "/pdf")
    assert resp.getheader("Content-Type") == "application/pdf" and body == PDF_BYTES
    resp, body = get(site, "/image.png")
    assert resp.getheader("Content-Type") == "image/png" and body == PNG_BYTES
    resp, body = get(site, "/json")
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body) == JSON_DOC


def test_status_head_and_headers_echo(site: HostileSite) -> None:
    assert get(site, "/status/418")[0].status == 418
    assert get(site, "/nowhere")[0].status == 404
    resp, body = get(site, "/ok", method="HEAD")
    assert resp.status == 200 and body == b""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    conn.request("GET", "/headers", headers={"User-Agent": "ShoalBot/0.1"})
    assert json.loads(conn.getresponse().read())["user-agent"] == "ShoalBot/0.1"
    conn.close()


def test_robots_default_and_configured() -> None:
    with HostileSite() as s:
        resp, body = get(s, "/robots.txt")
        assert resp.status == 200 and body.decode() == DEFAULT_ROBOTS
        assert get(s, "/private/x")[0].status == 200  # disallowed only by robots.txt
        s.robots_status = 503
        assert get(s, "/robots.txt")[0].status == 503
        s.robots_status = 0
        with pytest.raises(ConnectionResetError):
            get(s, "/robots.txt")
    with HostileSite(robots="User-agent: *\nDisallow: /\n", robots_status=404) as s:
        resp, body = get(s, "/robots.txt")
        assert resp.status == 404 and body == b"User-agent: *\nDisallow: /\n"


def test_in_flight_peak_counts_simultaneous_requests() -> None:
    with HostileSite() as s:
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=5) for _ in range(3)]
        for c in conns:
            c.request("GET", "/slow-headers?s=0.3")
        for c in conns:
            assert c.getresponse().status == 200
            c.close()
        assert s.peak == 3
        # the handler leaves the count after the client has its response: wait for it, bounded
        deadline = time.monotonic() + 5
        while s.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.in_flight == 0


# --- the forward proxy ---------------------------------------------------------------------


def via_proxy(proxy_url: str, url: str, auth: tuple[str, str] | None = None):  # type: ignore[no-untyped-def]
    handler = urllib.request.ProxyHandler({"http": proxy_url})
    opener = urllib.request.build_opener(handler)
    req = urllib.request.Request(url)
    if auth is not None:
        token = f"{auth[0]}:{auth[1]}".encode()
        import base64

        req.add_header("Proxy-Authorization", "Basic " + base64.b64encode(token).decode())
    return opener.open(req, timeout=5)


def test_proxy_forwards_and_counts(site: HostileSite) -> None:
    with ForwardProxy() as proxy:
        before = site.hits["/ok"]
        with via_proxy(proxy.url, site.url("/ok")) as resp:
            assert resp.status == 200 and b"/ok" in resp.read()
            assert resp.headers["Via"] == "1.1 shoal-test-proxy"
        assert proxy.forwarded == 1 and proxy.targets == [site.url("/ok")]
        assert site.hits["/ok"] == before + 1
        assert site.log[-1].target == "/ok"  # origin form upstream
        assert "proxy-connection" not in site.log[-1].headers
        # bodies stream through, both ways
        with via_proxy(proxy.url, site.url("/huge?mb=2&chunked=1")) as resp:
            assert len(resp.read()) == 2 * MIB
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.request("POST", site.url("/ok"), body=b"a=1" * 1000)
        assert conn.getresponse().status == 200
        conn.close()
        assert proxy.forwarded == 3


def test_proxy_passes_slow_drip_through_as_it_comes(site: HostileSite) -> None:
    with ForwardProxy() as proxy:
        t0 = time.monotonic()
        with via_proxy(proxy.url, site.url("/drip?bytes=4&every=0.1")) as resp:
            assert time.monotonic() - t0 < 0.1
            assert resp.read() == b"xxxx"
        assert time.monotonic() - t0 >= 0.28


def test_proxy_requires_auth_when_asked(site: HostileSite) -> None:
    with ForwardProxy(require_auth=("user", "pass")) as proxy:
        with pytest.raises(urllib.error.HTTPError) as err:
            via_proxy(proxy.url, site.url("/ok"))
        assert err.value.code == 407
        assert err.value.headers["Proxy-Authenticate"].startswith("Basic")
        with pytest.raises(urllib.error.HTTPError):
            via_proxy(proxy.url, site.url("/ok"), auth=("user", "wrong"))
        with via_proxy(proxy.url, site.url("/ok"), auth=("user", "pass")) as resp:
            assert resp.status == 200
        assert proxy.rejected == 2 and proxy.forwarded == 1
        assert proxy.auth_url == f"http://user:pass@127.0.0.1:{proxy.port}"


def test_proxy_connect_tunnel(site: HostileSite) -> None:
    with ForwardProxy(require_auth=("u", "p")) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.set_tunnel(f"127.0.0.1:{site.port}", headers={"Proxy-Authorization": "Basic dTpw"})
        conn.request("GET", "/ok")
        assert conn.getresponse().read().count(b"/ok") >= 1
        conn.request("GET", "/json")  # the tunnel stays open for keep-alive
        assert json.loads(conn.getresponse().read()) == JSON_DOC
        conn.close()
        assert proxy.tunnels == 1 and proxy.targets == [f"127.0.0.1:{site.port}"]


def test_proxy_upstream_unreachable_and_fail_with(site: HostileSite) -> None:
    with ForwardProxy() as proxy:
        with pytest.raises(urllib.error.HTTPError) as err:
            via_proxy(proxy.url, dead_proxy_url() + "/x")
        assert err.value.code == 502
        proxy.fail_with = 503
        with pytest.raises(urllib.error.HTTPError) as err:
            via_proxy(proxy.url, site.url("/ok"))
        assert err.value.code == 503


def test_dead_proxy_refuses_connections() -> None:
    url = dead_proxy_url()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
