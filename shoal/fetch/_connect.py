"""Connecting for the HTTP/1.1 transport: resolve, dial, TLS, and proxies.

``Dialer.connect`` hands a protocol (the transport's connection) a transport that is ready for
the request: TCP to the host (or to the proxy), TLS where the target is ``https``, a proxy's
tunnel open. All of it happens within ``connect_timeout_s``.

- Names resolve through ``resolver`` (the engine's ``GuardedResolver`` for direct connections:
  the addresses checked are the addresses dialled), answers cached ``dns_ttl_s``; literal IPs,
  IPv4 in every spelling ``inet_aton`` reads included (``_policy.literal_ip``), are dialled as
  the engine's guard read them, never resolved.
- Happy Eyeballs (RFC 8305, with ``aiohappyeyeballs``): the resolver's addresses, families
  interleaved, each new attempt started 250 ms after the last unless it has failed already;
  the first to connect wins. A blackholed first address (an AAAA record of a host whose IPv6
  is broken) costs 250 ms, not the whole connect timeout.
- TLS with the engine's context (certificate and host name verified, SNI).
- HTTP forward proxies, ``http://`` or ``https://`` (TLS to the proxy itself, verified with the
  same context, so ``Proxy-Authorization`` never crosses the network in clear):
  an ``http`` target is asked of the proxy in absolute form (the transport writes it, see
  ``forwards_http``), an ``https`` one through a ``CONNECT`` tunnel, with TLS to the target
  inside it (TLS in TLS through an ``https://`` proxy).
- SOCKS proxies (``python-socks``): ``socks5://`` and ``socks4://`` resolve the target here,
  through ``target_resolver`` (the guard: the address the proxy is asked for is the address
  checked); ``socks5h://`` hands the name to the proxy, which resolves it, like an HTTP proxy
  (the engine pre-checks the name, ``Engine._check_target``). ``user:pass@`` is SOCKS5's
  username/password authentication (SOCKS4: the user id).
- Failing to reach a proxy, a tunnel it refuses (a ``CONNECT`` answer other than 200, 407
  included; a SOCKS refusal or failed authentication) is a ``ProxyError`` (the engine benches
  the proxy). The target's own trouble stays the target's: a certificate that does not verify
  inside the tunnel is an ``ssl.SSLError``, a name the guard refuses a ``BlockedAddress``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Callable

import aiohappyeyeballs
from aiohttp.abc import AbstractResolver, ResolveResult
from python_socks import ProxyConnectionError as _SocksUnreachable
from python_socks import ProxyError as _SocksRefused
from python_socks import ProxyType
from python_socks.async_.asyncio import Proxy as _SocksProxy
from yarl import URL

from ._guard import GuardedResolver
from ._policy import AddressPolicy, literal_ip
from ._proxy import PROXY_PORTS

#: the most bytes of a proxy's answer to CONNECT we read
MAX_TUNNEL_HEAD = 64 * 1024
#: RFC 8305's "Connection Attempt Delay": the next address is tried after this long
HAPPY_EYEBALLS_DELAY_S = 0.25
_SOCKS = {"socks5": ProxyType.SOCKS5, "socks5h": ProxyType.SOCKS5, "socks4": ProxyType.SOCKS4}


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
    return proxy is not None and proxy.scheme in ("http", "https")


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
    """Opens connections for one ``Transport`` (see the module docstring).

    ``target_resolver`` resolves the targets of ``socks5://``/``socks4://`` proxies; give it
    the engine's ``GuardedResolver`` (the engine's policy). Without one, such targets resolve
    through ``resolver`` checked by the strictest policy (public addresses only, no
    allow-list), so the guard can only be stricter than asked, never skipped.
    """

    def __init__(
        self,
        *,
        resolver: AbstractResolver,
        connect_timeout_s: float,
        dns_ttl_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        target_resolver: AbstractResolver | None = None,
        happy_eyeballs_delay_s: float = HAPPY_EYEBALLS_DELAY_S,
    ) -> None:
        self._resolver = resolver
        self.connect_timeout_s = connect_timeout_s
        self._dns_ttl_s = dns_ttl_s
        self._ssl = ssl_context
        self._target_resolver = target_resolver
        self._delay_s = happy_eyeballs_delay_s
        self._dns: dict[tuple[int, str], tuple[float, list[ResolveResult]]] = {}

    async def connect(
        self, protocol: asyncio.Protocol, host: str, port: int, *, https: bool, proxy: URL | None
    ) -> None:
        """Connect ``protocol`` to ``host:port`` (through ``proxy``): on return its
        ``connection_made`` has been called with the transport to send the request on."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if proxy is None:
                    ssl_host = host if https else None
                    await self._open(lambda: protocol, host, port, self._resolver, ssl_host)
                elif proxy.scheme in _SOCKS:
                    await self._via_socks(protocol, proxy, host, port, https)
                else:
                    await self._via_http_proxy(protocol, proxy, host, port, https)
        except TimeoutError as exc:
            what = "the proxy" if proxy is not None else host
            error: Exception = ConnectTimeout(
                f"no connection to {what} within {self.connect_timeout_s:g} s"
            )
            if proxy is not None:
                error = ProxyError(str(error))
            raise error from exc

    # ---------------------------------------------------------------- TCP (and TLS)
    async def _open(
        self,
        factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        resolver: AbstractResolver,
        ssl_host: str | None,
    ) -> asyncio.Transport:
        """TCP to one of ``host``'s addresses (Happy Eyeballs), then TLS for ``ssl_host``."""
        infos = [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", _sockaddr(address, port, family))
            for address, family in await self._addresses(host, port, resolver)
        ]
        if not infos:  # a resolver that answers nothing rather than failing
            raise socket.gaierror(socket.EAI_NONAME, f"no addresses for {host!r}")
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=self._delay_s, interleave=1
        )
        return await self._wrap(factory, sock, ssl_host)

    async def _wrap(
        self, factory: Callable[[], asyncio.Protocol], sock: socket.socket, ssl_host: str | None
    ) -> asyncio.Transport:
        """A transport on the connected ``sock``, with TLS to ``ssl_host`` when given."""
        context = (self._ssl or default_ssl_context()) if ssl_host is not None else None
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(
                factory, sock=sock, ssl=context, server_hostname=ssl_host
            )
        except BaseException:
            sock.close()
            raise
        return transport  # type: ignore[return-value]

    async def _addresses(
        self, host: str, port: int, resolver: AbstractResolver
    ) -> list[tuple[str, int]]:
        # a literal, in any IPv4 spelling libc reads (127.1, 0x7f.1): dialled as the engine's
        # guard read it, never resolved (a numeric host that is no address: InvalidHost)
        ip = literal_ip(host)
        if ip is not None:
            return [(str(ip), socket.AF_INET6 if ip.version == 6 else socket.AF_INET)]
        now = asyncio.get_running_loop().time()
        key = (id(resolver), host)
        cached = self._dns.get(key)
        if cached is None or cached[0] < now:
            results = await resolver.resolve(host, port, socket.AF_UNSPEC)
            if len(self._dns) > 10_000:
                self._dns.clear()
            cached = self._dns[key] = (now + self._dns_ttl_s, list(results))
        return [(r["host"], r["family"]) for r in cached[1]]

    # ---------------------------------------------------------------- HTTP(S) proxies
    async def _via_http_proxy(
        self, protocol: asyncio.Protocol, proxy: URL, host: str, port: int, https: bool
    ) -> None:
        handshake = _Handshake(asyncio.get_running_loop())
        proxy_host = proxy.raw_host or ""
        try:
            transport = await self._open(
                lambda: handshake,
                proxy_host,
                proxy.port or PROXY_PORTS[proxy.scheme],
                self._resolver,
                proxy_host if proxy.scheme == "https" else None,
            )
        except OSError as exc:  # gaierror and ssl.SSLError included: the proxy's own
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
        if status == 407:
            raise ProxyError("the proxy refused the tunnel (407: authentication)", status=status)
        if status != 200:
            raise ProxyError(f"the proxy refused the tunnel ({status})", status=status)
        if rest:
            raise ProxyError("the proxy sent data before the tunnel was open")
        # TLS in TLS through an https:// proxy: asyncio layers it on Python 3.11+
        tls = await asyncio.get_running_loop().start_tls(
            transport, handshake, self._ssl or default_ssl_context(), server_hostname=host
        )
        if tls is None:
            raise ProxyError("the tunnel closed during the TLS handshake")
        return tls  # type: ignore[return-value]

    # ---------------------------------------------------------------- SOCKS proxies
    async def _via_socks(
        self, protocol: asyncio.Protocol, proxy: URL, host: str, port: int, https: bool
    ) -> None:
        remote = proxy.scheme == "socks5h"  # the proxy resolves the name
        dest = host if remote else await self._socks_target(proxy.scheme, host, port)
        proxy_port = proxy.port or PROXY_PORTS[proxy.scheme]
        try:
            addresses = await self._addresses(proxy.raw_host or "", proxy_port, self._resolver)
        except OSError as exc:
            raise ProxyError(f"cannot reach the proxy: {exc}") from exc
        last: Exception | None = None
        for address, _family in addresses:
            socks = _SocksProxy(
                _SOCKS[proxy.scheme],
                address,
                proxy_port,
                username=proxy.user,
                password=proxy.password,
                rdns=remote,
                loop=asyncio.get_running_loop(),
            )
            try:
                sock = await socks.connect(dest, port, timeout=self.connect_timeout_s)
            except _SocksUnreachable as exc:  # this address of the proxy: try the next
                last = exc
                continue
            except _SocksRefused as exc:
                raise ProxyError(
                    f"the SOCKS proxy refused the connection to {host}:{port}: {exc}"
                ) from exc
            break
        else:
            raise ProxyError(f"cannot reach the proxy: {last}") from last
        await self._wrap(lambda: protocol, sock, host if https else None)

    async def _socks_target(self, scheme: str, host: str, port: int) -> str:
        """The address a ``socks5://``/``socks4://`` proxy is asked to connect to: resolved
        here, through the guard (SOCKS4 speaks IPv4 only)."""
        resolver = self._target_resolver or self._strict_resolver()
        addresses = await self._addresses(host, port, resolver)
        if scheme == "socks4":
            addresses = [a for a in addresses if a[1] == socket.AF_INET]
            if not addresses:
                raise ProxyError(f"socks4:// cannot reach {host}: it has no IPv4 address")
        return addresses[0][0]

    def _strict_resolver(self) -> AbstractResolver:
        if self._target_resolver is None:
            strict = AddressPolicy(allow_private_networks=False)
            self._target_resolver = GuardedResolver(self._resolver, strict)
        return self._target_resolver


def _sockaddr(address: str, port: int, family: int) -> tuple[str, int] | tuple[str, int, int, int]:
    return (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)


def _hand_over(transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
