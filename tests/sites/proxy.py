"""A real HTTP/1.1 forward proxy on 127.0.0.1, for the proxy-pool tests.

    with ForwardProxy(require_auth=("user", "pass")) as proxy:
        proxy.url        # "http://127.0.0.1:PORT" (no credentials in it)
        proxy.auth_url   # "http://user:pass@127.0.0.1:PORT"
        proxy.forwarded  # requests forwarded + tunnels opened

``ForwardProxy(tls=ca.server_context())`` is an ``https://`` proxy: it speaks TLS only (a
client that sends its request, ``Proxy-Authorization`` and all, in clear gets no answer).
``Tap(port)`` relays TCP to ``127.0.0.1:port`` and keeps every byte the client sent
(``sent``): what an eavesdropper on the way to the proxy would read.

Absolute-form requests (``GET http://host/path HTTP/1.1``) are forwarded in origin form with
the body streamed both ways; ``CONNECT host:port`` opens a tunnel (https). One request per client
connection (answers carry ``Connection: close``). Without the right ``Proxy-Authorization`` when
``require_auth`` is set the answer is 407; with ``fail_with`` set (e.g. 502) every request gets
that status unforwarded. An upstream that cannot be reached is 502.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from urllib.parse import urlsplit

from .hostile import LoopServer, Request, read_request, reset, response_head

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)


def dead_proxy_url() -> str:
    """A proxy URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ForwardProxy(LoopServer):
    """The forward proxy; see the module docstring."""

    name = "forward-proxy"

    def __init__(
        self, require_auth: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(tls=tls)
        self.require_auth = require_auth
        self.fail_with: int | None = None
        self.forwarded = 0
        self.tunnels = 0
        self.rejected = 0  # 407s
        self.targets: list[str] = []  # absolute URLs and CONNECT authorities, in order

    def start(self) -> ForwardProxy:
        super().start()
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        if self.require_auth is None:
            return self.url
        user, password = self.require_auth
        return self.url.replace("://", f"://{user}:{password}@", 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        if req is None:
            return
        if self.require_auth is not None and not self._authorized(req):
            self.rejected += 1
            headers = [
                ("Proxy-Authenticate", 'Basic realm="shoal-test"'),
                ("Content-Length", "0"),
                ("Connection", "close"),
            ]
            writer.write(response_head(407, headers))
            await writer.drain()
            return
        if self.fail_with is not None:
            return await _answer(writer, self.fail_with)
        if req.method == "CONNECT":
            return await self._tunnel(req, reader, writer)
        await self._forward(req, reader, writer)

    def _authorized(self, req: Request) -> bool:
        assert self.require_auth is not None
        scheme, _, value = req.headers.get("proxy-authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == self.require_auth

    async def _tunnel(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = req.target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            return await _answer(writer, 502)
        self.forwarded += 1
        self.tunnels += 1
        self.targets.append(req.target)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.transport.close()

    async def _forward(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        url = urlsplit(req.target)
        if url.scheme != "http" or not url.hostname:
            return await _answer(writer, 400)
        try:
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        except OSError:
            return await _answer(writer, 502)
        self.forwarded += 1
        self.targets.append(req.target)
        try:
            await self._relay(req, url.path or "/", url.query, reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.close()

    async def _relay(
        self,
        req: Request,
        path: str,
        query: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        target = path + ("?" + query if query else "")
        lines = [f"{req.method} {target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in req.headers.items() if k not in _HOP_BY_HOP]
        if "host" not in req.headers:
            lines.append(f"host: {urlsplit(req.target).netloc}")
        lines.append("connection: close")
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await _copy_body(req, reader, up_writer)
        try:
            head = await up_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return await _answer(writer, 502)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        kept = [
            line
            for line in header_lines
            if line and line.partition(":")[0].strip().lower() not in _HOP_BY_HOP
        ]
        out = [status_line, *kept, "Via: 1.1 shoal-test-proxy", "Connection: close"]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        try:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            reset(writer)  # pass the upstream's reset on


async def _copy_body(req: Request, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
    """Stream the request body (Content-Length or chunked) to the upstream."""
    if req.headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            up.write(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    up.write(trailer)
                up.write(b"\r\n")
                break
            up.write(await reader.readexactly(size + 2))
            await up.drain()
    else:
        left = int(req.headers.get("content-length", "0") or 0)
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                break
            up.write(data)
            left -= len(data)
            await up.drain()
    await up.drain()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy ``src`` to ``dst`` until EOF, then half-close ``dst`` (a tunnel's one direction)."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.transport.close()


async def _answer(writer: asyncio.StreamWriter, status: int) -> None:
    body = f"proxy: {status}".encode()
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    writer.write(response_head(status, headers) + body)
    await writer.drain()


class Tap(LoopServer):
    """A TCP relay to ``127.0.0.1:upstream`` that records what clients send (``sent``)."""

    name = "tap"

    def __init__(self, upstream: int) -> None:
        super().__init__()
        self.upstream = upstream
        self.sent = bytearray()

    def start(self) -> Tap:
        super().start()
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            await asyncio.gather(self._record(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.transport.close()

    async def _record(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                self.sent += data
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            dst.transport.close()
