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


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: IPv4 ranges refused, from IANA's special-purpose address registry (RFC 6890 and updates),
#: spelled out rather than left to ``ipaddress``, whose flags differ between Python versions
#: (3.11.7 lets 192.0.0.8 through, for one).
_BLOCKED_V4 = _nets(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",
    "100.64.0.0/10",  # carrier-grade NAT (and Alibaba's metadata, 100.100.100.200)
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
#: IPv6 ranges refused (IANA's IPv6 special-purpose registry). The ranges that carry an IPv4
#: address (mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by
#: that address instead (``_embedded_v4``).
_BLOCKED_V6 = _nets(
    "::/8",  # unspecified, loopback, IPv4-compatible (deprecated), SIIT ::ffff:0:0:0/96
    "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215): a translator inside the network
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments: Teredo 2001::/32 (tunnels to any IPv4), ORCHID...
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # SRv6 segment identifiers (RFC 9602)
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local, deprecated (RFC 3879) but still routed by some stacks
    "ff00::/8",  # multicast
    "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside fc00::/7; named for the record)
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where connecting to it reaches that one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:  # the well-known NAT64 prefix: the translator connects to the IPv4
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_blocked_address(ip: IPAddress) -> bool:
    """True for every address that is not public: loopback, private, link-local, site-local,
    multicast, reserved, documentation, benchmarking, unspecified, and IPv6 forms of those."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return is_blocked_address(embedded)
        table: tuple[IPNetwork, ...] = _BLOCKED_V6
    else:
        table = _BLOCKED_V4
    if any(ip in net for net in table):
        return True
    # belt and braces: whatever this Python's ``ipaddress`` knows of too
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def parse_address(text: str) -> IPAddress:
    """An address from a resolver answer (an IPv6 zone, ``%eth0``, is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


class BlockedAddress(Exception):
    """A host resolved (or is) an address the guard refuses; maps to the ``blocked`` code."""

    def __init__(self, host: str, address: IPAddress | None, message: str | None = None) -> None:
        super().__init__(message or f"host {host!r} resolves to a non-public address ({address})")
        self.host = host
        self.address = address


class InvalidHost(BlockedAddress):
    """A host made of numbers that is not an IPv4 address (``1.2.3.4.5``, ``256.1``).

    A resolver would hand it to DNS, where anyone may answer it: refused instead, like a
    browser does (a ``BlockedAddress`` so every caller of the guard refuses it)."""

    def __init__(self, host: str) -> None:
        super().__init__(host, None, f"host {host!r} is numeric but not a valid IPv4 address")


def _ipv4_number(part: str) -> int | None:
    """One dot-part of an IPv4 literal as ``inet_aton`` reads it: decimal, ``0x`` hex or
    ``0``-led octal; None when it is not a number."""
    digits, base = part, 10
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    if not digits:
        return 0 if base == 16 else None  # "0x" is 0 (WHATWG); "" is not a number
    allowed = "0123456789abcdefABCDEF"[: base if base != 16 else 22]
    if not all(c in allowed for c in digits):
        return None
    return int(digits, base)


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as an IPv4 literal in any form ``inet_aton`` accepts (``127.1``,
    ``0x7f.1``, ``2130706433``, ``017700000001``), following the WHATWG URL standard: a host
    whose last label is a number is an IPv4 literal or invalid (``InvalidHost``)."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # one trailing dot is the root
    last = parts[-1]
    numeric = bool(last) and all(c in "0123456789" for c in last)
    if not numeric and (last[:2] not in ("0x", "0X") or _ipv4_number(last) is None):
        return None  # a name: its last label is not a number
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise InvalidHost(host)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise InvalidHost(host)
    whole = values[-1]
    for i, n in enumerate(values[:-1]):
        whole += n << (8 * (3 - i))
    return ipaddress.IPv4Address(whole)


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an address when it is an IP literal (``[::1]``, and IPv4 in every form a
    resolver would read as one), else None; ``InvalidHost`` for a numeric host that is none."""
    bare = host.strip("[]").split("%", 1)[0]
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare)
        except ValueError:
            return None
    return _ipv4_literal(bare)


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
        return self.checked_literal(host) is not None

    def checked_literal(self, host: str) -> IPAddress | None:
        """The address ``host`` stands for when it is an IP literal in any spelling (checked:
        ``BlockedAddress`` when refused); None for a name."""
        ip = literal_ip(host)
        if ip is not None:
            self.check(host, (ip,))
        return ip
