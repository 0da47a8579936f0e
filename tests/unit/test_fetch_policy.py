"""The SSRF policy's address table and host parsing (``shoal/fetch/_policy.py``).

The table follows IANA's special-purpose registries for IPv4 and IPv6, spelled out so that it
does not depend on what this Python's ``ipaddress`` flags; IPv6 forms that carry an IPv4 address
(mapped, NAT64, 6to4) are judged by that address. A host is read the way a resolver reads it:
``127.1``, ``0x7f.1``, ``2130706433`` and ``017700000001`` are all 127.0.0.1, and a numeric host
that is no IPv4 address (``1.2.3.4.5``) is refused rather than handed to DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions
from shoal.fetch._policy import AddressPolicy, BlockedAddress, InvalidHost, is_blocked_address
from shoal.settings import Settings
from tests.sites.hostile import HostileSite
from tests.sites.names import MapResolver

BLOCKED = [
    "0.1.2.3",  # "this network"
    "100.64.0.1",  # carrier-grade NAT
    "192.0.0.8",  # IETF protocol assignments (not flagged by Python 3.11.7's ipaddress)
    "192.0.0.170",
    "192.0.2.1",  # TEST-NET-1
    "192.88.99.1",  # 6to4 relay anycast, deprecated
    "198.18.0.1",  # benchmarking
    "198.51.100.7",
    "203.0.113.9",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible, deprecated
    "::ffff:0:10.0.0.1",  # SIIT
    "::ffff:127.0.0.1",  # mapped
    "::ffff:169.254.169.254",
    "64:ff9b::10.0.0.1",  # NAT64 of a private address
    "64:ff9b::127.0.0.1",
    "64:ff9b:1::8.8.8.8",  # local-use NAT64: a translator inside the network
    "100::1",  # discard-only
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:db8::1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",  # SRv6 SIDs
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata
    "fe80::1",
    "fec0::1",  # site-local: the example
    "feff:ffff::1",
    "ff02::1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "192.31.196.1",  # AS112: globally reachable
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "64:ff9b::8.8.8.8",  # NAT64 of a public address: reaches 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("ip", BLOCKED)
def test_special_purpose_addresses_are_blocked(ip: str) -> None:
    """Each is a range IANA marks not globally reachable (or an IPv6 form of one)."""
    assert is_blocked_address(ipaddress.ip_address(ip)), ip


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    """The table must not refuse the public Internet, NAT64 and 6to4 of public IPv4 included."""
    assert not is_blocked_address(ipaddress.ip_address(ip)), ip


@pytest.mark.parametrize(
    "host", ["127.1", "0x7f.1", "2130706433", "017700000001", "0x7f000001", "0177.0.0.01",
             "127.0.0.1.", "0X7F.0.0.1", "0", "169.254.43518", "0xa9fea9fe"]
)  # fmt: skip
def test_every_form_inet_aton_reads_is_checked_as_the_address(host: str) -> None:
    """What libc's resolver would connect to is what the guard judges, whatever the spelling."""
    policy = AddressPolicy(allow_private_networks=False)
    with pytest.raises(BlockedAddress) as info:
        policy.check_literal(host)
    assert not isinstance(info.value, InvalidHost)
    assert info.value.address == ipaddress.ip_address(socket.inet_aton(host.rstrip(".")))


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1", "1.256.1", "4294967296", "09",
                                  "1..2", "example.123", "a.0x", "0x1g.1"])  # fmt: skip
def test_numeric_hosts_that_are_no_ipv4_are_invalid_even_when_private_is_allowed(
    host: str,
) -> None:
    """A resolver sends these to DNS, where whoever answers chooses the address: refused, as
    browsers do (WHATWG URL: a host whose last label is a number must be an IPv4 address)."""
    for allow in (False, True):
        with pytest.raises(InvalidHost, match="not a valid IPv4 address"):
            AddressPolicy(allow_private_networks=allow).check_literal(host)


@pytest.mark.parametrize(
    ("host", "literal"),
    [("example.com", False), ("a.0xg", False), ("1e2.example", False), ("foo.1e2", False),
     ("xn--80ak6aa92e.com", False), ("8.8.8.8", True), ("[2606:4700:4700::1111]", True)],
)  # fmt: skip
def test_names_and_public_literals_are_left_alone(host: str, literal: bool) -> None:
    """Names go on to the guarded resolver (``False``); a public literal passes (``True``)."""
    assert AddressPolicy(allow_private_networks=False).check_literal(host) is literal


# ----------------------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def site() -> Iterator[HostileSite]:
    s = HostileSite().start()
    yield s
    s.stop()


def _engine(resolver: MapResolver, *, allow_private: bool) -> Engine:
    settings = Settings(allow_private_networks=allow_private, fetch_retries=0)  # type: ignore[call-arg]
    return Engine(concurrency=1, settings=settings, resolver=resolver)


@pytest.mark.parametrize("host", ["127.1", "0x7f.1", "2130706433", "017700000001"])
async def test_a_fetch_to_a_legacy_spelling_is_judged_and_dialled_as_its_address(
    site: HostileSite, host: str
) -> None:
    """The guard refuses it as 127.0.0.1; allowed, it is dialled as 127.0.0.1. Neither asks
    the resolver (here a table that knows no name), so no DNS server chooses the address."""
    url = f"http://{host}:{site.port}/ok"
    options = FetchOptions(respect_robots=False)
    resolver = MapResolver({})
    async with _engine(resolver, allow_private=False) as engine:
        with pytest.raises(FetchError) as info:
            await engine.fetch(url, options)
    assert info.value.code == "blocked" and "(127.0.0.1)" in info.value.message
    before = site.hits["/ok"]
    async with _engine(resolver, allow_private=True) as engine:
        resp = await engine.fetch(url, options)
    assert resp.status == 200 and site.hits["/ok"] == before + 1
    assert resolver.asked == []


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1"])
async def test_a_fetch_to_a_numeric_host_that_is_no_ipv4_never_reaches_dns(host: str) -> None:
    """Refused (``blocked``, saying why) even with private networks allowed."""
    resolver = MapResolver({})
    async with _engine(resolver, allow_private=True) as engine:
        with pytest.raises(FetchError) as info:
            await engine.fetch(f"http://{host}/", FetchOptions(respect_robots=False))
    assert info.value.code == "blocked"
    assert "not a valid IPv4 address" in info.value.message
    assert resolver.asked == []
