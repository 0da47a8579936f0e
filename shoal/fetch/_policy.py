"""SSRF policy: which addresses a fetch (or a webhook delivery) may connect to.

Plain ``ipaddress`` logic, no aiohttp, so the API can check a webhook URL without loading the
fetch engine. ``_guard.GuardedResolver`` applies it at the moment of connecting.

The operator's allow-list (``SHOAL_ALLOW_HOSTS``) names hosts (``intranet.example``), domain
suffixes (``.corp.example``) or networks (``10.0.0.0/8``, ``192.0.2.7``) that are always allowed;
``SHOAL_ALLOW_PRIVATE_NETWORKS`` turns the guard off (tests, local demos).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Ranges that ``ipaddress`` does not flag as private in every Python version.
_EXTRA_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT (and Alibaba's metadata)
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, cloud metadata (169.254.169.254)
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)


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


def parse_address(text: str) -> IPAddress:
    """An address from a resolver answer (an IPv6 zone, ``%eth0``, is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an address when it is an IP literal (``[::1]`` too), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class BlockedAddress(Exception):
    """A host resolved (or is) an address the guard refuses; maps to the ``blocked`` code."""

    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(f"host {host!r} resolves to a non-public address ({address})")
        self.host = host
        self.address = address


class AddressPolicy:
    """Which addresses may be connected to: public ones, plus the operator's allow-list."""

    def __init__(self, *, allow_private_networks: bool, allow: Iterable[str] = ()) -> None:
        self.allow_private = allow_private_networks
        self._hosts: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[IPNetwork] = []
        for raw in allow:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                entry = entry[1:]
            if entry.startswith("."):
                self._suffixes.append(entry)
            else:
                self._hosts.add(entry)

    @classmethod
    def parse(cls, *, allow_private_networks: bool, allow_hosts: str) -> AddressPolicy:
        return cls(allow_private_networks=allow_private_networks, allow=allow_hosts.split(","))

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        """The operator's policy (``SHOAL_ALLOW_PRIVATE_NETWORKS``, ``SHOAL_ALLOW_HOSTS``)."""
        return cls.parse(
            allow_private_networks=settings.allow_private_networks,
            allow_hosts=settings.allow_hosts,
        )

    def host_allowed(self, host: str) -> bool:
        """True when ``host`` (a name) is on the allow-list, whatever it resolves to."""
        name = host.lower().rstrip(".")
        return name in self._hosts or any(name.endswith(s) or name == s[1:] for s in self._suffixes)

    def address_allowed(self, ip: IPAddress) -> bool:
        if self.allow_private or not is_blocked_address(ip):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks if net.version == ip.version)

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise ``BlockedAddress`` unless every address of ``host`` may be connected to.

        One bad address refuses the host: a name answering both a public and a private address
        is the classic rebinding set-up.
        """
        if self.allow_private or self.host_allowed(host):
            return
        for ip in addresses:
            if not self.address_allowed(ip):
                raise BlockedAddress(host, ip)

    def check_literal(self, host: str) -> bool:
        """Check ``host`` if it is an IP literal (True then); False for a name."""
        ip = literal_ip(host)
        if ip is None:
            return False
        self.check(host, (ip,))
        return True
