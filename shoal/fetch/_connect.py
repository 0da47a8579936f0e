"""Connecting for the HTTP/1.1 transport: resolve, dial, TLS, and forward proxies.

``Dialer.connect`` hands a protocol (the transport's connection) a transport that is ready for
the request: TCP to the host (or to the proxy), TLS where the target is ``https``, a proxy's
``CONNECT`` tunnel done. Everything here happens within ``connect_timeout_s``.

- Names resolve through ``resolver`` (the engine's ``GuardedResolver`` for direct connections:
  the addresses checked are the addresses dialled), answers cached ``dns_ttl_s``; literal IPs
  are dialled as they are (the engine checks them). Addresses are tried in the resolver's order.
- TLS with the engine's context (certificate and host name verified, SNI).
- Forward proxies (``http://[user:pass@]host:port``): an ``http`` target is asked of the proxy
  in absolute form (by the transport, see ``forwards_http``), an ``https`` one through a
  ``CONNECT`` tunnel; credentials go in ``Proxy-Authorization``. Failing to reach the proxy, or
  a tunnel it refuses, is a ``ProxyError`` (the engine benches that proxy).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

#: the most bytes of a proxy's answer to CONNECT we read
MAX_TUNNEL_HEAD = 64 * 1024


class ConnectTimeout(TimeoutError):
    """No connection (TCP, TLS and any proxy tunnel) within ``connect_timeout_s``."""


class ProxyError(ConnectionError):
    """The proxy could not be reached, or refused the tunnel (``status``: its answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The verifying client context, made once (building one reads the CA store: ~10 ms)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def forwards_http(proxy: URL | None) -> bool:
    """True when an ``http`` target goes to ``proxy`` as an absolute-form request (with
    ``Proxy-Authorization``), not through a tunnel."""
    return proxy is not None


def proxy_authorization(proxy: URL) -> str:
    """The ``Proxy-Authorization`` value for the proxy's ``user:password``."""
    token = f"{proxy.user or ''}:{proxy.password or ''}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


class _Handshake(asyncio.Protocol):
    """Reads a proxy's answer before the connection is handed to its real protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = exc or ConnectionResetError("connection closed")
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_tunnel_head(self) -> tuple[int, bytes]:
        """The status of a CONNECT answer (its head read raw: a parser would wait for a body)."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, rest = bytes(self.buffer[:end]), bytes(self.buffer[end + 4 :])
                self.buffer.clear()
                parts = head.split(b"\r\n", 1)[0].split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                    raise ProxyError(f"invalid answer to CONNECT: {head[:100]!r}")
                return int(parts[1]), rest
            if len(self.buffer) > MAX_TUNNEL_HEAD:
                raise ProxyError(f"answer to CONNECT larger than {MAX_TUNNEL_HEAD} bytes")
            if self.error is not None:
                raise ProxyError(f"proxy closed the tunnel: {self.error}") from self.error
            await self.wait()


class Dialer:
    """Opens connections for one ``Transport`` (see the module docstring)."""

    def __init__(
        self,
        *,
        resolver: AbstractResolver,
        connect_timeout_s: float,
        dns_ttl_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        self.connect_timeout_s = connect_timeout_s
        self._dns_ttl_s = dns_ttl_s
        self._ssl = ssl_context
        self._dns: dict[str, tuple[float, list[ResolveResult]]] = {}

    async def connect(
        self, protocol: asyncio.Protocol, host: str, port: int, *, https: bool, proxy: URL | None
    ) -> None:
        """Connect ``protocol`` to ``host:port`` (through ``proxy``): on return its
        ``connection_made`` has been called with the transport to send the request on."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if proxy is None:
                    await self._dial(lambda: protocol, host, port, ssl_host=host if https else None)
                else:
                    await self._via_proxy(protocol, proxy, host, port, https)
        except TimeoutError as exc:
            what = "the proxy" if proxy is not None else host
            error: Exception = ConnectTimeout(
                f"no connection to {what} within {self.connect_timeout_s:g} s"
            )
            if proxy is not None:
                error = ProxyError(str(error))
            raise error from exc

    async def _dial(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, *, ssl_host: str | None
    ) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        context = (self._ssl or default_ssl_context()) if ssl_host is not None else None
        last: BaseException | None = None
        for address, family in await self._addresses(host, port):
            try:
                transport, _ = await loop.create_connection(
                    factory,
                    address,
                    port,
                    family=family,
                    ssl=context,
                    server_hostname=ssl_host if context is not None else None,
                )
                return transport  # type: ignore[return-value]
            except ssl.SSLError:
                raise  # the server answered: another address will not verify better
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [(host, socket.AF_INET6 if ":" in host else socket.AF_INET)]
        except OSError:
            pass
        now = asyncio.get_running_loop().time()
        cached = self._dns.get(host)
        if cached is None or cached[0] < now:
            results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
            if len(self._dns) > 10_000:
                self._dns.clear()
            cached = self._dns[host] = (now + self._dns_ttl_s, list(results))
        return [(r["host"], r["family"]) for r in cached[1]]

    async def _via_proxy(
        self, protocol: asyncio.Protocol, proxy: URL, host: str, port: int, https: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        handshake = _Handshake(loop)
        try:
            transport = await self._dial(
                lambda: handshake, proxy.raw_host or "", proxy.port or 80, ssl_host=None
            )
        except OSError as exc:  # gaierror included: the proxy's own name
            raise ProxyError(f"cannot reach the proxy: {exc}") from exc
        try:
            if https:
                transport = await self._tunnel(handshake, transport, proxy, host, port)
        except BaseException:
            transport.close()
            raise
        _hand_over(transport, protocol)

    async def _tunnel(
        self,
        handshake: _Handshake,
        transport: asyncio.Transport,
        proxy: URL,
        host: str,
        port: int,
    ) -> asyncio.Transport:
        """``CONNECT`` through the proxy, then TLS to ``host`` inside the tunnel."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy.raw_user is not None:
            lines += f"Proxy-Authorization: {proxy_authorization(proxy)}\r\n"
        transport.write(f"{lines}\r\n".encode("latin-1", "replace"))
        status, rest = await handshake.read_tunnel_head()
        if status != 200:
            raise ProxyError(f"the proxy refused the tunnel ({status})", status=status)
        if rest:
            raise ProxyError("the proxy sent data before the tunnel was open")
        tls = await asyncio.get_running_loop().start_tls(
            transport, handshake, self._ssl or default_ssl_context(), server_hostname=host
        )
        if tls is None:
            raise ProxyError("the tunnel closed during the TLS handshake")
        return tls  # type: ignore[return-value]


def _hand_over(transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
