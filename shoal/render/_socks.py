"""The browser's only way out: a SOCKS5 server in our process that applies the fetch guard.

Chromium is started with ``--proxy-server=socks5://127.0.0.1:PORT`` (per context: one listener
per rendered page) and no loopback bypass (Playwright subtracts Chromium's implicit one with
``<-loopback>``), so every connection the page makes -- the document, subresources, XHR/fetch,
every redirect hop, websockets, EventSource, a service worker's fetches, prefetches -- arrives
here as a SOCKS5 ``CONNECT`` before a single byte reaches its target. Chromium sends SOCKS5
targets as names (remote resolution), so the browser never resolves a name itself.

Each ``CONNECT`` is dialled by the fetch engine's own ``Dialer`` with the engine's
``GuardedResolver``: the name is resolved once, every address checked by the same
``AddressPolicy`` as a plain fetch, and the checked address is the one dialled (Happy Eyeballs
included). A host that answers a public address to a first lookup and a private one to a
second (DNS rebinding) gets no second lookup to answer. IP literals, in every spelling, are
checked with ``AddressPolicy.checked_literal`` as the engine does. Nothing here copies a rule.

Why a SOCKS5 proxy and not request interception (``page.route``) or ``--host-resolver-rules``:
interception sees neither websockets' sockets nor (with ``service_workers`` allowed) a
worker's requests, and cannot decide which address Chromium then connects to; resolver rules
are per browser, not per request, and need the answer before the page asks. A socket-level
proxy sees all of it, decides the address itself, and attributes what it refused to one page
(a listener per page). It is also where an upstream proxy of the job's pool plugs in
(``upstream``): ``socks5://``/``socks4://`` targets resolved here through the guard,
``socks5h://`` and ``http(s)://`` targets pre-checked here and resolved by the proxy, as the
engine does for plain fetches.

Cost (``bench/render.py``, a bare Playwright loop with and without only this guard, same
Chromium, a fresh context per page, 120 catalog pages, 2 shared cores): CPU of the whole
process tree per page 250 / 234 / 264 ms bare against 243 / 241 / 252 ms guarded at 4 / 8 / 16
pages open, pages/s 6.5 / 6.4 / 6.0 against 6.0 / 6.0 / 5.8: within the run-to-run noise
(+-10 %). Chromium's own work per page (a renderer process per context) dwarfs a TCP relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver
from yarl import URL

from shoal.fetch._connect import Dialer, ProxyError, proxy_authorization
from shoal.fetch._guard import GuardedResolver
from shoal.fetch._policy import AddressPolicy, BlockedAddress, parse_address
from shoal.fetch._proxy import PROXY_PORTS

_BUFFER = 64 * 1024
# SOCKS5 reply codes (RFC 1928, 6)
_OK, _FAILURE, _NOT_ALLOWED, _UNREACHABLE, _REFUSED, _NO_COMMAND, _NO_ATYP = 0, 1, 2, 4, 5, 7, 8


@dataclass
class Refusal:
    """One connection the guard refused (``reason``: ``blocked``, ``dns``, ``connect``,
    ``proxy``)."""

    host: str
    port: int
    reason: str
    detail: str


#: entries a page's log keeps of each kind (a page may try a million connections)
MAX_LOG = 1000


@dataclass
class GuardLog:
    """What one page's connections did: what was dialled and what was refused (the first
    ``MAX_LOG`` of each, and the counts)."""

    connected: list[tuple[str, int]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    connections: int = 0
    refusals: int = 0

    def refuse(self, refusal: Refusal) -> None:
        self.refusals += 1
        if len(self.refused) < MAX_LOG:
            self.refused.append(refusal)
        else:
            self.refused[-1] = refusal  # the last one names what a failed navigation hit

    def connect(self, host: str, port: int) -> None:
        self.connections += 1
        if len(self.connected) < MAX_LOG:
            self.connected.append((host, port))

    def refusal_for(self, host: str) -> Refusal | None:
        """The first refusal of ``host`` (as the browser asked for it), if any."""
        host = host.strip("[]").lower()
        return next((r for r in self.refused if r.host.lower() == host), None)


_Writer = asyncio.StreamWriter


class _Capture(asyncio.StreamReaderProtocol):
    """A stream protocol that keeps its transport, so the ``Dialer`` can hand one over."""

    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        super().connection_made(transport)


def guard_dialers(
    policy: AddressPolicy, resolver: AbstractResolver, connect_timeout_s: float
) -> tuple[Dialer, Dialer]:
    """The direct dialer (names resolved and checked by the guard) and the proxied one (the
    operator's proxies resolved unguarded, SOCKS targets through the guard): the engine's
    pair (``Engine._transport``), so a rendered page and a plain fetch obey one policy."""
    guarded = GuardedResolver(resolver, policy)
    direct = Dialer(resolver=guarded, connect_timeout_s=connect_timeout_s)
    proxied = Dialer(
        resolver=resolver, connect_timeout_s=connect_timeout_s, target_resolver=guarded
    )
    return direct, proxied


class GuardProxy:
    """A SOCKS5 listener on 127.0.0.1 for one page; see the module docstring.

    ``precheck(host)`` checks a name the upstream proxy will resolve (``socks5h``, ``http``);
    the renderer passes the engine's rule: resolve here, refuse if any answer is refused.
    """

    def __init__(
        self,
        *,
        policy: AddressPolicy,
        direct: Dialer,
        proxied: Dialer,
        resolver: AbstractResolver,
        upstream: str | None = None,
    ) -> None:
        self._policy = policy
        self._direct = direct
        self._proxied = proxied
        self._resolver = resolver
        self._upstream = URL(upstream) if upstream else None
        self.log = GuardLog()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> GuardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_BUFFER)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop listening and cut every connection of this page still open."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # ------------------------------------------------------------------ one connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            target = await _handshake(reader, writer)
            if target is None:
                return
            host, port = target
            try:
                up_reader, upstream = await self._dial(host, port)
            except BlockedAddress as exc:
                self.log.refuse(Refusal(host, port, "blocked", str(exc)))
                await _reply(writer, _NOT_ALLOWED)
                return
            except socket.gaierror as exc:
                self.log.refuse(Refusal(host, port, "dns", str(exc)))
                await _reply(writer, _UNREACHABLE)
                return
            except ProxyError as exc:
                self.log.refuse(Refusal(host, port, "proxy", str(exc)))
                await _reply(writer, _FAILURE)
                return
            except (OSError, TimeoutError) as exc:
                self.log.refuse(Refusal(host, port, "connect", str(exc)))
                await _reply(writer, _REFUSED)
                return
            self.log.connect(host, port)
            await _reply(writer, _OK)
            await _pipe(reader, writer, up_reader, upstream)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the page is gone (3.11's start_server logs a cancelled callback)
        except Exception as exc:  # a refusal of this one connection, never the page's end
            self.log.refuse(Refusal("?", 0, "connect", f"guard proxy: {exc!r}"))
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _dial(self, host: str, port: int) -> tuple[asyncio.StreamReader, _Writer]:
        """Connect to ``host:port`` as the fetch engine would (see the module docstring)."""
        self._policy.checked_literal(host)  # literals: the dialer never resolves them
        proxy = self._upstream
        if proxy is not None and proxy.scheme in ("socks5h", "http", "https"):
            await self._precheck(host)
        reader = asyncio.StreamReader(limit=_BUFFER)
        protocol = _Capture(reader)
        if proxy is None:
            await self._direct.connect(protocol, host, port, https=False, proxy=None)
        elif proxy.scheme.startswith("socks"):
            await self._proxied.connect(protocol, host, port, https=False, proxy=proxy)
        else:
            await self._connect_tunnel(protocol, reader, proxy, host, port)
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        return reader, asyncio.StreamWriter(protocol.transport, protocol, reader, loop)

    async def _precheck(self, host: str) -> None:
        """The engine's rule for targets a proxy resolves: our own answer must pass."""
        if self._policy.allow_private or self._policy.host_allowed(host):
            return
        if self._policy.checked_literal(host) is not None:
            return
        try:
            results = await self._resolver.resolve(host, 0, socket.AF_UNSPEC)
        except OSError:
            return  # the proxy may resolve what we cannot (as Engine._check_target)
        self._policy.check(host, (parse_address(r["host"]) for r in results))

    async def _connect_tunnel(
        self, protocol: _Capture, reader: asyncio.StreamReader, proxy: URL, host: str, port: int
    ) -> None:
        """A raw ``CONNECT`` tunnel through an HTTP(S) proxy (the page's TLS, if any, runs
        inside it end to end). The proxy itself is dialled unguarded: the operator's choice."""
        proxy_port = proxy.port or PROXY_PORTS[proxy.scheme]
        try:
            tls = proxy.scheme == "https"
            host_ = proxy.raw_host or ""
            await self._proxied.connect(protocol, host_, proxy_port, https=tls, proxy=None)
        except OSError as exc:
            raise ProxyError(f"cannot reach the proxy: {exc}") from exc
        assert protocol.transport is not None
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy.raw_user is not None:
            head += f"Proxy-Authorization: {proxy_authorization(proxy)}\r\n"
        protocol.transport.write(f"{head}\r\n".encode("latin-1", "replace"))
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            protocol.transport.close()
            raise ProxyError(f"no answer to CONNECT: {exc}") from exc
        parts = answer.split(b"\r\n", 1)[0].split(None, 2)
        if len(parts) < 2 or parts[1] != b"200":
            protocol.transport.close()
            raise ProxyError(f"the proxy refused the tunnel: {answer[:60]!r}")


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, int] | None:
    """Read a SOCKS5 greeting and ``CONNECT``; the target, or None after refusing it."""
    version, count = await reader.readexactly(2)
    methods = await reader.readexactly(count)
    if version != 5 or 0 not in methods:
        writer.write(b"\x05\xff")
        return None
    writer.write(b"\x05\x00")
    version, command, _, atyp = await reader.readexactly(4)
    if atyp == 1:
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
    elif atyp == 4:
        host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
    elif atyp == 3:
        (length,) = await reader.readexactly(1)
        raw = await reader.readexactly(length)
        if not raw.isascii():  # Chromium sends names in their ASCII (punycode) form
            await _reply(writer, _UNREACHABLE)
            return None
        host = raw.decode("ascii")
    else:
        await _reply(writer, _NO_ATYP)
        return None
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    if command != 1:  # BIND and UDP ASSOCIATE: never (QUIC/WebRTC UDP are off in the browser)
        await _reply(writer, _NO_COMMAND)
        return None
    return host, port


async def _reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0)))
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side ends (flow control: ``drain``)."""

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(_BUFFER):
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    tasks = [
        asyncio.ensure_future(copy(a_reader, b_writer)),
        asyncio.ensure_future(copy(b_reader, a_writer)),
    ]
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
