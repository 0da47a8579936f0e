"""SSRF guard: resolve a host once per engine and refuse non-public addresses.

First version: the address check happens before httpx connects, and httpx resolves the name
again itself, so a DNS-rebinding host could still slip through between the two lookups. Pinning
the connection to the checked address (a custom transport) is the next step.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from shoal.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Ranges that ``ipaddress`` does not flag as private in every Python version.
_EXTRA_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, cloud metadata (169.254.169.254)
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)

_CACHE_MAX = 100_000


def is_blocked_address(ip: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved, unspecified, non-global."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_blocked_address(mapped)
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return True
    return any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _retrieve(task: asyncio.Future[list[IPAddress]]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved even when every waiter was cancelled


class HostGuard:
    """Resolves hosts (cached per engine) and raises ``blocked``/``dns`` FetchErrors."""

    def __init__(self, *, allow_private_networks: bool) -> None:
        self.allow_private = allow_private_networks
        self._cache: dict[str, asyncio.Future[list[IPAddress]]] = {}

    async def resolve(self, host: str) -> list[IPAddress]:
        """The addresses of ``host``; concurrent lookups of one host share one query.

        Raises ``socket.gaierror`` when the name does not resolve (failures are not cached).
        """
        literal = _literal(host)
        if literal is not None:
            return [literal]
        key = host.lower()
        task = self._cache.get(key)
        if task is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            # A task of its own, so one caller's cancellation never fails the others.
            task = asyncio.ensure_future(self._lookup(key))
            task.add_done_callback(_retrieve)
            self._cache[key] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            if failed and self._cache.get(key) is task:
                del self._cache[key]
            raise

    @staticmethod
    async def _lookup(host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        addrs = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
        if not addrs:
            raise socket.gaierror(socket.EAI_NONAME, "no addresses")
        return addrs

    async def check(self, host: str, *, url: str, attempts: int = 1) -> None:
        """Raise ``FetchError("dns")`` or ``FetchError("blocked")`` for ``host``."""
        if self.allow_private and _literal(host) is not None:
            return
        try:
            addrs = await self.resolve(host)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(
                "dns", f"cannot resolve host {host!r}: {exc}", final_url=url, attempts=attempts
            ) from exc
        if self.allow_private:
            return
        bad = [a for a in addrs if is_blocked_address(a)]
        if bad:
            raise FetchError(
                "blocked",
                f"host {host!r} resolves to a non-public address ({bad[0]})",
                final_url=url,
                attempts=attempts,
            )
