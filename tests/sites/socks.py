"""A real SOCKS5 (RFC 1928, RFC 1929) and SOCKS4 proxy on 127.0.0.1, for the proxy tests.

    with SocksProxy(require_auth=("user", "pass"), hosts={"site.test": "127.0.0.1"}) as proxy:
        proxy.url("socks5")       # "socks5://127.0.0.1:PORT" (no credentials in it)
        proxy.auth_url("socks5h") # "socks5h://user:pass@127.0.0.1:PORT"
        proxy.requests            # what clients asked for: ("ipv4" | "ipv6" | "name", host, port)

Only the CONNECT command. A name asked for (SOCKS5 address type 3, or SOCKS4a) is resolved
through ``hosts`` only, never DNS; an unknown name is "host unreachable" (SOCKS5 reply 4).
Without the right user name and password when ``require_auth`` is set, SOCKS5 authentication
fails (RFC 1929 status 1) and SOCKS4 is "rejected" (91). With ``refuse`` set every CONNECT is
answered "connection refused" (SOCKS5 reply 5, SOCKS4 91) and nothing is dialled. A destination
that cannot be reached is reply 5 (SOCKS4 91). Then the bytes are piped both ways.

python-socks has a client only; this is the server side, small and strict.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from .hostile import LoopServer
from .proxy import pipe


class SocksProxy(LoopServer):
    """The SOCKS proxy; see the module docstring."""

    name = "socks-proxy"

    def __init__(
        self,
        require_auth: tuple[str, str] | None = None,
        hosts: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.require_auth = require_auth
        self.hosts = dict(hosts or {})
        self.refuse = False
        self.requests: list[tuple[str, str, int]] = []
        self.auth_failures = 0
        self.tunnels = 0

    def start(self) -> SocksProxy:
        super().start()
        return self

    def url(self, scheme: str = "socks5") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def auth_url(self, scheme: str = "socks5") -> str:
        if self.require_auth is None:
            return self.url(scheme)
        user, password = self.require_auth
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version = (await reader.readexactly(1))[0]
        if version == 5:
            await self._socks5(reader, writer)
        elif version == 4:
            await self._socks4(reader, writer)

    # ---------------------------------------------------------------- SOCKS5
    async def _socks5(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        methods = await reader.readexactly((await reader.readexactly(1))[0])
        wanted = 0x02 if self.require_auth is not None else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")  # no acceptable method
            return
        writer.write(bytes([5, wanted]))
        if wanted == 0x02:
            await reader.readexactly(1)  # sub-negotiation version, 1
            user = await reader.readexactly((await reader.readexactly(1))[0])
            password = await reader.readexactly((await reader.readexactly(1))[0])
            if (user.decode(), password.decode()) != self.require_auth:
                self.auth_failures += 1
                writer.write(b"\x01\x01")
                return
            writer.write(b"\x01\x00")
        _ver, command, _rsv, atyp = await reader.readexactly(4)
        if atyp == 1:
            kind, host = "ipv4", str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 4:
            kind, host = "ipv6", str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif atyp == 3:
            size = (await reader.readexactly(1))[0]
            kind, host = "name", (await reader.readexactly(size)).decode()
        else:
            writer.write(_reply5(8))  # address type not supported
            return
        port = struct.unpack("!H", await reader.readexactly(2))[0]
        self.requests.append((kind, host, port))
        if command != 1:
            writer.write(_reply5(7))  # command not supported
            return
        if self.refuse:
            writer.write(_reply5(5))
            return
        address = self.hosts.get(host) if kind == "name" else host
        if address is None:
            writer.write(_reply5(4))  # host unreachable
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(address, port)
        except OSError:
            writer.write(_reply5(5))
            return
        writer.write(_reply5(0))
        await self._pipe(reader, writer, up_reader, up_writer)

    # ---------------------------------------------------------------- SOCKS4(a)
    async def _socks4(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = (await reader.readexactly(1))[0]
        port = struct.unpack("!H", await reader.readexactly(2))[0]
        raw = await reader.readexactly(4)
        user = (await reader.readuntil(b"\x00"))[:-1].decode()
        if raw[:3] == b"\x00\x00\x00" and raw[3] != 0:  # SOCKS4a: a name follows
            kind, host = "name", (await reader.readuntil(b"\x00"))[:-1].decode()
        else:
            kind, host = "ipv4", str(ipaddress.IPv4Address(raw))
        self.requests.append((kind, host, port))
        if self.require_auth is not None and user != self.require_auth[0]:
            self.auth_failures += 1
            writer.write(_reply4(91))
            return
        address = self.hosts.get(host) if kind == "name" else host
        if command != 1 or self.refuse or address is None:
            writer.write(_reply4(91))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(address, port)
        except OSError:
            writer.write(_reply4(91))
            return
        writer.write(_reply4(90))
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        self.tunnels += 1
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.transport.close()


def _reply5(code: int) -> bytes:
    return bytes([5, code, 0, 1]) + socket.inet_aton("0.0.0.0") + b"\x00\x00"


def _reply4(code: int) -> bytes:
    return bytes([0, code]) + b"\x00\x00" + b"\x00\x00\x00\x00"
