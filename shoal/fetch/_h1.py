"""HTTP/1.1 for the engine: pooled keep-alive connections on asyncio, answers parsed by httptools.

Why our own transport, not aiohttp's client. The engine sends one kind of request (a GET with a
header block) and reads one kind of answer (a head, then a body under a cap), and on a page
that is 44 KB from nginx on loopback aiohttp's client machinery (``ClientSession``,
``ClientRequest``/``ClientResponse``, the connector, ``StreamReader``, per-read timers) cost
more CPU than parsing the page: fetch + parse of the same 10,000 pages in one process, 8 in
flight, took 0.40-0.41 CPU ms a page through aiohttp and 0.28 through a plain ``asyncio.Protocol``
with httptools' llhttp parser (the same C parser aiohttp uses). See ``bench/fetch_engines.py``.

What it does:

- ``Transport.request`` sends ``GET`` on a pooled connection of (scheme, host, port, proxy) and
  returns a ``Response`` once the head is in; ``Response.read_some`` hands over the body as it
  arrives, ``Response.release`` returns the connection to the pool when the answer was read to
  its end and the server keeps it alive (otherwise it is closed).
- Idle connections: at most ``max_idle`` in all (the oldest closed first), none older than
  ``keepalive_s``. A request on a reused connection that dies before any byte of its answer is
  sent once more on a new connection: the server closed an idle connection as we reused it
  (RFC 9112 9.3.1 allows that for an idempotent request).
- Timeouts: connecting (TCP, TLS, a proxy's CONNECT) within ``connect_timeout_s``; no gap longer
  than ``read_timeout_s`` while waiting for the head or the body (``ReadTimeout``). The engine's
  per-URL clock bounds the whole.
- Names resolve through ``resolver`` (the engine's ``GuardedResolver``: the addresses checked
  are the addresses dialled), answers cached ``dns_ttl_s``; literal IPs are dialled as they are
  (the engine checks them). Addresses are tried in the resolver's order.
- TLS with the default context (certificate and host name verified, SNI).
- Forward proxies (``http://[user:pass@]host:port``): an ``http`` target is asked of the proxy
  in absolute form, an ``https`` one through a ``CONNECT`` tunnel; credentials go in
  ``Proxy-Authorization``. Failing to reach the proxy, or a tunnel it refuses, is a
  ``ProxyError`` (the engine benches that proxy).
- Limits on what a server can make us hold: a response head of at most ``MAX_HEAD`` bytes and
  ``MAX_FIELDS`` fields (interim answers and trailers count too), and at most ``HIGH_WATER``
  bytes of body read ahead of the engine (reading pauses until it has taken them), so a body's
  size is bounded by the engine's cap, not by the server.
- What we send: ``Host`` and credentials from the transport, the rest from ``header_block``,
  which refuses control characters and every header that frames the message or the connection
  (a GET saying ``Content-Length: 5`` would desynchronise a pooled connection).
- What we accept (RFC 9112, as strict as llhttp; ``tests/unit/test_h1_conformance.py`` fences
  it): 1xx interim answers are skipped, a ``101`` is an ``InvalidResponse`` (we never ask to
  switch); repeated fields stay apart (``Response.headers`` is a ``CIMultiDict``: two
  ``Set-Cookie`` are two values), two different ``Location`` fields, two ``Content-Length``
  fields, a transfer coding other than ``chunked`` are invalid; trailer fields are read and
  dropped. No pipelining: a byte after an answer's end (a second answer, or anything on an
  idle connection) closes the connection, so it is never read as the next request's answer.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
from collections.abc import Mapping
from typing import Any

import httptools
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from shoal.headers import header_problem

from ._connect import ConnectTimeout, Dialer, ProxyError, default_ssl_context, forwards_http

__all__ = ["ConnectTimeout", "ProxyError", "default_ssl_context"]  # re-exported from _connect

#: the most bytes of response head (status line and headers) we accept
MAX_HEAD = 64 * 1024
#: the most header fields (trailer fields included) one answer may have
MAX_FIELDS = 500
#: body bytes read ahead of the consumer before the socket is paused
HIGH_WATER = 1 << 20


class ServerDisconnected(ConnectionError):
    """The connection closed before the answer was complete."""


class InvalidResponse(ConnectionError):
    """What the server sent is not HTTP/1.x, is ambiguous (two different ``Location``s, two
    ``Content-Length``s, a transfer coding other than chunked), switches protocols unasked, or
    exceeds ``MAX_HEAD``/``MAX_FIELDS``."""


class ReadTimeout(TimeoutError):
    """No byte of the answer for ``read_timeout_s``."""


def header_block(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines, or ``ValueError``: for a name that is not a token, a value
    with a control character (CR, LF, NUL, DEL...: injection), or a header that frames the
    message or the connection (Host, Content-Length, Transfer-Encoding, Connection, Upgrade,
    TE, Trailer, Keep-Alive, Proxy-*: the transport sets what it needs of these itself)."""
    lines = []
    for name, value in headers.items():
        if (why := header_problem(name, value)) is not None:
            raise ValueError(f"header {name[:60]!r}: {why}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1", "replace")


def _basic(user: str | None, password: str | None) -> str:
    token = f"{user or ''}:{password or ''}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


class _Conn(asyncio.Protocol):
    """One connection and the answer being read on it (one request at a time, no pipelining).

    Parser callbacks fill in the answer; ``_wake`` resolves whoever waits for the next step.
    Whatever goes wrong in parsing (``httptools`` raises ``HttpParserUpgrade`` for a 101, which
    is no ``HttpParserError``; a callback's own refusal comes wrapped) ends the exchange with
    ``InvalidResponse`` and closes the connection. A byte after the answer's end (a second answer
    to one request, or anything sent to an idle connection) closes the connection too: it is
    never reused, so a stray answer is never read as the next request's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[Any, ...]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._parser: Any = None
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.got_data = False
        self._head_bytes = 0
        self._fields = 0
        self._count = 0
        self._body: list[bytes] = []
        self._buffered = 0
        self._until_close = False

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        if self.complete:  # after the answer's end: not ours to read, nor the next request's
            self._stray()
            return
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # not only HttpParserError: HttpParserUpgrade is none
            if self.complete:  # a second answer followed the first in this read
                self._stray()
                return
            cause = exc.__context__
            if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
                cause, InvalidResponse
            ):
                self._fail(cause)  # refused by one of the callbacks below
            else:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._fail(InvalidResponse(f"invalid HTTP response: {why}"))
            return
        if not self.head_done:
            self._head_bytes += len(data)  # a head still coming: count what came so far
        if self._head_bytes > MAX_HEAD:
            self._fail(InvalidResponse(f"response head larger than {MAX_HEAD} bytes"))
            return
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and self._until_close and exc is None:
            self.complete = True  # a body without a length ends with the connection
            self.keep_alive = False
        elif not self.complete and self._error is None:
            why = f": {exc}" if exc else ""
            self._error = ServerDisconnected(f"server closed the connection{why}")
            if exc is not None:
                self._error.__cause__ = exc
        self._wake()

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            raise InvalidResponse("a second answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        # a whole head in one read is counted here; trailer fields too (then dropped)
        self._fields += len(name) + len(value) + 4
        self._count += 1
        if self._fields > MAX_HEAD:
            raise InvalidResponse(f"response head larger than {MAX_HEAD} bytes")
        if self._count > MAX_FIELDS:
            raise InvalidResponse(f"more than {MAX_FIELDS} header fields")
        if not self.head_done:  # trailer fields never join the head (RFC 9110 6.5.1)
            # repeated fields stay apart (Set-Cookie); names keep their case, looked up in any
            self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:  # llhttp would hand the connection over: we asked for no upgrade
                raise InvalidResponse("101 Switching Protocols to a request that asked none")
            if status < 100:
                raise InvalidResponse(f"invalid status {status}")
            self.headers = CIMultiDict()  # an interim answer (100, 103...): the real one follows
            return
        headers = self.headers
        chunked = False
        if "transfer-encoding" in headers:
            codings = [
                t
                for value in headers.getall("transfer-encoding")
                for t in value.lower().replace(" ", "").replace("\t", "").split(",")
                if t and t != "identity"
            ]
            if codings not in ([], ["chunked"]):  # we never ask for any (we send no TE)
                raise InvalidResponse(f"unsupported transfer coding {', '.join(codings)[:100]!r}")
            chunked = bool(codings)
        if "location" in headers:
            locations = headers.getall("location")
            if len(locations) > 1 and len(set(locations)) > 1:  # which one? (curl, browsers)
                raise InvalidResponse("several different Location fields")
        self.status = status
        self.head_done = True
        self._until_close = (
            "content-length" not in headers and not chunked and status not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()

    # ---------------------------------------------------------------- waiting
    def _stray(self) -> None:
        """Bytes after a complete answer: keep that answer, never reuse the connection."""
        self.keep_alive = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def read_head(self, timeout: float) -> None:
        while True:
            if self._error is not None:  # first: a head may be in, and refused
                raise self._error
            if self.head_done:
                return
            await self._wait(timeout)

    async def read_some(self, timeout: float) -> list[bytes]:
        while True:
            if self._error is not None and not self.complete:
                raise self._error
            if self._body:
                pieces, self._body, self._buffered = self._body, [], 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return pieces
            if self.complete:
                return []
            await self._wait(timeout)

    def take_body(self) -> bytes:
        """Everything buffered (when the answer is already complete)."""
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body, self._buffered = [], 0
        return body

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("no data from the server in time"))


class Response:
    """An answer whose head has arrived; read the body with ``read_some``, then ``release``."""

    __slots__ = ("_conn", "_transport", "status", "headers")

    def __init__(self, conn: _Conn, transport: Transport) -> None:
        self._conn = conn
        self._transport = transport
        self.status = conn.status
        self.headers = conn.headers

    @property
    def complete(self) -> bool:
        """Whether the whole body is already in (``body()`` then costs no wait)."""
        return self._conn.complete

    def body(self) -> bytes:
        """The buffered body of a complete answer."""
        return self._conn.take_body()

    async def read_some(self) -> list[bytes]:
        """The next pieces of the body (raw: still content-encoded); ``[]`` at its end."""
        return await self._conn.read_some(self._transport.read_timeout_s)

    def release(self) -> None:
        """Give the connection back (kept for reuse only after a complete keep-alive answer)."""
        self._transport._release(self._conn)


class Transport:
    """Connection pools for one engine (see the module docstring)."""

    def __init__(
        self,
        *,
        resolver: AbstractResolver,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_idle: int,
        keepalive_s: float = 30.0,
        dns_ttl_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        dialer: Dialer | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._max_idle = max(1, max_idle)
        self._keepalive_s = keepalive_s
        self._dialer = dialer or Dialer(
            resolver=resolver,
            connect_timeout_s=connect_timeout_s,
            dns_ttl_s=dns_ttl_s,
            ssl_context=ssl_context,
        )
        self._idle: dict[tuple[Any, ...], list[_Conn]] = {}
        self._idle_order: collections.deque[_Conn] = collections.deque()
        self._idle_count = 0
        self._open: set[_Conn] = set()

    # ---------------------------------------------------------------- requests
    async def request(self, url: URL, head: bytes, *, proxy: URL | None = None) -> Response:
        """Send ``GET url`` with ``head`` (the header lines, no Host) and wait for the answer's
        head. ``head`` is bytes from ``header_block``."""
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        key = (url.scheme, url.raw_host, port, proxy)
        host_line = url.host_port_subcomponent
        forward = not https and forwards_http(proxy)  # else direct, or through a tunnel
        if forward:
            target = f"{url.scheme}://{host_line}{url.raw_path_qs}"
        else:
            target = url.raw_path_qs or "/"
        lines = [f"GET {target} HTTP/1.1\r\nHost: {host_line}\r\n".encode("latin-1", "replace")]
        if url.raw_user is not None:
            auth = _basic(url.user, url.password)
            lines.append(f"Authorization: {auth}\r\n".encode("latin-1"))
        if forward and proxy is not None and proxy.raw_user is not None:
            auth = _basic(proxy.user, proxy.password)
            lines.append(f"Proxy-Authorization: {auth}\r\n".encode("latin-1"))
        lines.append(head)
        lines.append(b"\r\n")
        data = b"".join(lines)
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._exchange(conn, data)
            except (ServerDisconnected, ConnectionResetError, BrokenPipeError):
                if conn.got_data:
                    raise
                # the server dropped an idle connection as we reused it: once more, anew
        conn = await self._connect(url, key, https, port, proxy)
        return await self._exchange(conn, data)

    async def _exchange(self, conn: _Conn, data: bytes) -> Response:
        assert conn.transport is not None
        conn._reset()
        conn.transport.write(data)
        try:
            await conn.read_head(self.read_timeout_s)
        except BaseException:
            self._discard(conn)
            raise
        return Response(conn, self)

    # ---------------------------------------------------------------- the pool
    def _take_idle(self, key: tuple[Any, ...]) -> _Conn | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        now = asyncio.get_running_loop().time()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if not conn.closed and now - conn.idle_since < self._keepalive_s:
                if not conns:
                    del self._idle[key]
                return conn
            self._discard(conn)
        del self._idle[key]
        return None

    def _release(self, conn: _Conn) -> None:
        if not (conn.complete and conn.keep_alive) or conn.closed or conn._body:
            self._discard(conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_order.append(conn)
        self._idle_count += 1
        while self._idle_count > self._max_idle and self._idle_order:
            old = self._idle_order.popleft()
            conns = self._idle.get(old.key)
            if conns and old in conns:
                conns.remove(old)
                if not conns:
                    del self._idle[old.key]
                self._idle_count -= 1
                self._discard(old)
        if len(self._idle_order) > 4 * self._max_idle:  # drop entries of conns taken again
            idle = {id(c) for conns in self._idle.values() for c in conns}
            self._idle_order = collections.deque(c for c in self._idle_order if id(c) in idle)

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        """Close every connection, idle or not."""
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        self._idle_order.clear()
        self._idle_count = 0

    # ---------------------------------------------------------------- connecting
    async def _connect(
        self, url: URL, key: tuple[Any, ...], https: bool, port: int, proxy: URL | None
    ) -> _Conn:
        conn = _Conn(asyncio.get_running_loop(), key)
        try:
            await self._dialer.connect(conn, url.raw_host or "", port, https=https, proxy=proxy)
        except BaseException:
            conn.close()
            raise
        self._open.add(conn)
        return conn
