"""The fetch engine against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions, classify, is_blocked_address
from shoal.fetch._h1 import (
    ConnectTimeout,
    InvalidResponse,
    ProxyError,
    ReadTimeout,
    ServerDisconnected,
)
from shoal.fetch._policy import BlockedAddress
from shoal.settings import Settings

# -- a tiny HTTP/1.1 server on 127.0.0.1, running its own event loop in a thread

PAGE = b"<html><head><title>OK</title></head><body><h1>Hello</h1></body></html>"


class TestServer:
    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.port = 0
        self.active = 0
        self.max_active = 0
        self.hits: dict[str, int] = defaultdict(int)
        self.last_headers: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TestServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(5)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset_counters(self) -> None:
        self.active = 0
        self.max_active = 0

    def stop(self) -> None:
        async def _stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                self.last_headers = headers
                if not await self._route(target, headers, writer):
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        hdrs = {"Content-Type": "text/html; charset=utf-8", **(headers or {})}
        if "Transfer-Encoding" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        out = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(out.encode("latin-1") + b"\r\n" + body)
        await writer.drain()

    async def _route(
        self, target: str, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        key = query.get("key", [""])[0]
        self.hits[f"{path}?{key}"] += 1
        hit = self.hits[f"{path}?{key}"]
        if path == "/ok":
            await self._send(writer, 200, PAGE)
        elif path == "/echo-headers":
            body = "\n".join(f"{k}: {v}" for k, v in sorted(headers.items())).encode()
            await self._send(writer, 200, body, {"Content-Type": "text/plain"})
        elif path == "/404":
            await self._send(writer, 404, b"not here")
        elif path == "/500":
            await self._send(writer, 500, b"boom")
        elif path == "/flaky":
            await self._send(writer, 500 if hit == 1 else 200, PAGE)
        elif path == "/429":
            if hit == 1:
                await self._send(writer, 429, b"slow down", {"Retry-After": "0"})
            else:
                await self._send(writer, 200, PAGE)
        elif path == "/slow":
            await asyncio.sleep(float(query.get("d", ["5"])[0]))
            await self._send(writer, 200, PAGE)
        elif path == "/concurrent":
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            try:
                await asyncio.sleep(0.05)
            finally:
                self.active -= 1
            await self._send(writer, 200, PAGE)
        elif path == "/redirect":
            await self._send(writer, 302, b"", {"Location": "/ok"})
        elif path == "/redirect-abs":
            await self._send(writer, 301, b"", {"Location": f"{self.base}/redirect"})
        elif path == "/loop":
            await self._send(writer, 302, b"", {"Location": "/loop"})
        elif path == "/big":
            await self._send(writer, 200, b"x" * (2 * 1024 * 1024))
        elif path == "/big-chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"y" * 65536
            try:
                for _ in range(64):
                    writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except ConnectionError:
                return False
        elif path == "/gzip":
            await self._send(writer, 200, gzip.compress(PAGE), {"Content-Encoding": "gzip"})
        elif path == "/latin1":
            body = "<html><head><meta charset='iso-8859-1'></head><body>café</body></html>"
            await self._send(writer, 200, body.encode("latin-1"), {"Content-Type": "text/html"})
        elif path == "/reset":
            return False  # close without answering
        else:
            await self._send(writer, 404, b"no route")
        return True


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    srv = TestServer().start()
    yield srv
    srv.stop()


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {"allow_private_networks": True, "fetch_retries": 2}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def _key() -> str:
    return str(time.monotonic_ns())


async def _fail(engine: Engine, url: str, options: FetchOptions | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        await engine.fetch(url, options or FetchOptions())
    return info.value


async def test_ok_page(server: TestServer) -> None:
    async with Engine(concurrency=4, settings=_settings()) as engine:
        resp = await engine.fetch(f"{server.base}/ok", FetchOptions())
    assert resp.status == 200
    assert resp.content == PAGE
    assert "<h1>Hello</h1>" in resp.text
    assert resp.content_type == "text/html"
    assert resp.final_url == resp.url == f"{server.base}/ok"
    assert resp.attempts == 1
    assert resp.elapsed_ms >= 0
    assert resp.headers["content-type"].startswith("text/html")


async def test_default_and_per_url_headers(server: TestServer) -> None:
    settings = _settings(user_agent="TestBot/1")
    async with Engine(concurrency=1, settings=settings) as engine:
        resp = await engine.fetch(f"{server.base}/echo-headers", FetchOptions())
        assert "user-agent: TestBot/1" in resp.text
        assert "gzip" in resp.text
        resp = await engine.fetch(
            f"{server.base}/echo-headers",
            FetchOptions(headers={"user-agent": "Other/2", "X-Extra": "1"}),
        )
    assert "user-agent: Other/2" in resp.text
    assert "x-extra: 1" in resp.text
    assert "TestBot" not in resp.text


async def test_gzip_and_charset(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        gz = await engine.fetch(f"{server.base}/gzip")
        latin = await engine.fetch(f"{server.base}/latin1")
    assert gz.content == PAGE
    assert "café" in latin.text


async def test_404_is_http_4xx(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        err = await _fail(engine, f"{server.base}/404")
    assert err.code == "http_4xx"
    assert err.http_status == 404
    assert err.message == "HTTP 404 Not Found"
    assert err.attempts == 1
    assert err.final_url == f"{server.base}/404"


async def test_500_then_200_is_retried(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        resp = await engine.fetch(f"{server.base}/flaky?key={_key()}")
    assert resp.status == 200
    assert resp.attempts == 2


async def test_429_then_200_is_retried(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        resp = await engine.fetch(f"{server.base}/429?key={_key()}")
    assert resp.status == 200
    assert resp.attempts == 2


async def test_always_500_is_http_5xx_after_retries(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        err = await _fail(engine, f"{server.base}/500")
    assert err.code == "http_5xx"
    assert err.http_status == 500
    assert err.attempts == 3


async def test_slow_page_times_out(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        t0 = time.monotonic()
        err = await _fail(engine, f"{server.base}/slow?d=5", FetchOptions(timeout_s=0.5))
        took = time.monotonic() - t0
    assert err.code == "timeout"
    assert 0.4 < took < 1.5


async def test_redirect_records_final_url(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        resp = await engine.fetch(f"{server.base}/redirect-abs")
    assert resp.status == 200
    assert resp.url == f"{server.base}/redirect-abs"
    assert resp.final_url == f"{server.base}/ok"
    assert resp.attempts == 1


async def test_redirect_loop(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings(max_redirects=5)) as engine:
        err = await _fail(engine, f"{server.base}/loop")
    assert err.code == "too_many_redirects"
    assert err.http_status == 302
    assert err.final_url == f"{server.base}/loop"


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_big_body_is_too_large(server: TestServer, path: str) -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        err = await _fail(engine, f"{server.base}{path}", FetchOptions(max_body_bytes=100_000))
        ok = await engine.fetch(f"{server.base}{path}", FetchOptions(max_body_bytes=10_000_000))
    assert err.code == "too_large"
    assert len(ok.content) > 100_000


async def test_connection_refused_is_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Engine(concurrency=2, settings=_settings(fetch_retries=1)) as engine:
        err = await _fail(engine, f"http://127.0.0.1:{port}/")
    assert err.code == "connect"
    assert err.attempts == 2  # connect errors are retried


async def test_reset_without_answer_is_connect(server: TestServer) -> None:
    async with Engine(concurrency=2, settings=_settings(fetch_retries=0)) as engine:
        err = await _fail(engine, f"{server.base}/reset")
    assert err.code == "connect"


async def test_unknown_host_is_dns() -> None:
    async with Engine(concurrency=2, settings=_settings()) as engine:
        err = await _fail(engine, "http://no-such-host.invalid/")
    assert err.code == "dns"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "[::1]"])
async def test_private_addresses_are_blocked(server: TestServer, host: str) -> None:
    async with Engine(concurrency=2, settings=_settings(allow_private_networks=False)) as engine:
        err = await _fail(engine, f"http://{host}:{server.port}/ok")
    assert err.code == "blocked"


async def test_redirect_hop_is_checked(server: TestServer) -> None:
    # The first hop is public by construction only in real life; here we check that a redirect
    # target is guarded by blocking the whole loopback and watching the hop counter stay put.
    before = server.hits.get("/redirect?", 0)
    async with Engine(concurrency=2, settings=_settings(allow_private_networks=False)) as engine:
        err = await _fail(engine, f"{server.base}/redirect")
    assert err.code == "blocked"
    assert server.hits.get("/redirect?", 0) == before


def test_blocked_address_table() -> None:
    blocked = ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.169.254",
               "0.0.0.0", "224.0.0.1", "100.64.0.1", "::1", "fe80::1", "::ffff:127.0.0.1",
               "fc00::1", "240.0.0.1"]  # fmt: skip
    public = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"]
    for ip in blocked:
        assert is_blocked_address(ipaddress.ip_address(ip)), ip
    for ip in public:
        assert not is_blocked_address(ipaddress.ip_address(ip)), ip


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "not a url", "http://", "mailto:a@b.c", "//example.com/"]
)
async def test_invalid_urls(url: str) -> None:
    async with Engine(concurrency=1, settings=_settings()) as engine:
        err = await _fail(engine, url)
    assert err.code == "invalid_url"


async def test_an_unconfigured_proxy_pool_is_proxy(server: TestServer) -> None:
    async with Engine(concurrency=1, settings=_settings()) as engine:
        err = await _fail(engine, f"{server.base}/ok", FetchOptions(proxy_type="residential"))
        assert err.code == "proxy"


async def test_browse_admits_a_rendered_url_as_a_fetch() -> None:
    """``Engine.browse`` (a URL the browser loads): robots.txt and the guard first, then one of
    the job's slots held while the caller renders, and the proxy pool's pick handed over."""
    from tests.sites.hostile import HostileSite

    with HostileSite() as site:  # its robots.txt disallows /private/
        async with Engine(concurrency=1, settings=_settings()) as engine:
            with pytest.raises(FetchError) as info:
                async with engine.browse(site.url("/private/x")):
                    raise AssertionError("admitted a URL robots.txt disallows")
            assert info.value.code == "robots_disallowed"
            async with engine.browse(site.url("/ok")) as proxy:
                assert proxy is None and engine.in_flight == 1
                plain = asyncio.ensure_future(engine.fetch(site.url("/ok")))
                await asyncio.sleep(0.2)
                assert not plain.done()  # the rendered URL holds the job's only slot
            assert (await plain).status == 200 and engine.peak_in_flight == 1
        assert site.hits["/robots.txt"] == 1 and site.hits["/private/x"] == 0
    strict = _settings(allow_private_networks=False)
    proxies = {"datacenter": ["http://127.0.0.1:9"]}
    async with Engine(concurrency=2, settings=strict, proxies=proxies) as engine:
        for url, code in [
            ("http://169.254.169.254/latest/", "blocked"),
            ("ftp://example.com/", "invalid_url"),
        ]:
            with pytest.raises(FetchError) as info:
                async with engine.browse(url):
                    pass
            assert info.value.code == code
        with pytest.raises(FetchError) as info:
            async with engine.browse("http://93.184.216.34/", FetchOptions(proxy_type="x")):
                pass
        assert info.value.code == "proxy"
        options = FetchOptions(proxy_type="datacenter", respect_robots=False)
        async with engine.browse("http://93.184.216.34/", options) as proxy:
            assert proxy == "http://127.0.0.1:9"
        assert engine.in_flight == 0


async def test_concurrency_is_a_true_cap(server: TestServer) -> None:
    server.reset_counters()
    async with Engine(concurrency=5, settings=_settings()) as engine:
        results = await asyncio.gather(
            *(engine.fetch(f"{server.base}/concurrent?key={i}") for i in range(50))
        )
        assert engine.in_flight == 0
        assert engine.peak_in_flight == 5
    assert all(r.status == 200 for r in results)
    assert server.max_active <= 5
    assert server.max_active >= 2


async def test_per_host_cap(server: TestServer) -> None:
    server.reset_counters()
    async with Engine(concurrency=10, settings=_settings(), max_per_host=3) as engine:
        await asyncio.gather(
            *(engine.fetch(f"{server.base}/concurrent?key={i}") for i in range(30))
        )
        assert engine.peak_in_flight == 3
    assert server.max_active <= 3


async def test_settings_max_per_host_caps_too(server: TestServer) -> None:
    server.reset_counters()
    async with Engine(concurrency=10, settings=_settings(max_per_host=2)) as engine:
        await asyncio.gather(
            *(engine.fetch(f"{server.base}/concurrent?key={i}") for i in range(20))
        )
        assert engine.peak_in_flight == 2
    assert server.max_active <= 2


# -- pure error mapping: exception instances in, contract codes out (no transport at all)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConnectionRefusedError(111, "refused"), "connect"),
        (socket.gaierror(-2, "Name or service not known"), "dns"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls"),
        (ssl.SSLError(1, "handshake"), "tls"),
        (ProxyError("cannot reach the proxy: refused"), "proxy"),
        (ProxyError("the proxy refused the tunnel (407)", status=407), "proxy"),
        (ConnectTimeout("slow connect"), "timeout"),
        (ReadTimeout("slow read"), "timeout"),
        (TimeoutError(), "timeout"),
        (ServerDisconnected("server closed the connection"), "connect"),
        (ConnectionResetError(104, "reset"), "connect"),
        (InvalidResponse("invalid HTTP response"), "connect"),
        (BlockedAddress("meta.example", ipaddress.ip_address("169.254.169.254")), "blocked"),
    ],
)
def test_error_mapping(exc: Exception, code: str) -> None:
    assert classify(exc) == code


def test_error_mapping_looks_at_causes() -> None:
    tls = ServerDisconnected("handshake failed")
    tls.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert classify(tls) == "tls"
    dns = OSError(-2, "Name or service not known")
    dns.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert classify(dns) == "dns"
    blocked = ConnectionRefusedError(1, "refused")
    blocked.__context__ = BlockedAddress("x", ipaddress.ip_address("10.0.0.1"))
    assert classify(blocked) == "blocked"
