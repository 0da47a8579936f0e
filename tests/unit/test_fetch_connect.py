"""How the transport connects (``shoal/fetch/_connect.py``), against real servers on 127.0.0.1.

- ``https://`` proxies: TLS to the proxy (verified with the engine's context), then CONNECT and
  TLS to the target inside that TLS, or an absolute-form request for an ``http`` target. The
  test proxy speaks TLS only, so credentials sent in clear (the old behaviour) never work.
- SOCKS proxies through a test SOCKS server: ``socks5://`` with and without authentication,
  ``socks4://``, refusals, and ``socks5h://`` (the proxy resolves) against ``socks5://`` (the
  name resolved here, through the guard, and only its address sent).
- Happy Eyeballs: a blackholed first address costs 250 ms, not the connect timeout.
"""

from __future__ import annotations

import base64
import errno
import select
import socket
import time
from collections.abc import Iterator

import pytest
from aiohttp.abc import AbstractResolver
from yarl import URL

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions
from shoal.fetch._connect import Dialer, ProxyError
from shoal.fetch._guard import GuardedResolver
from shoal.fetch._h1 import Transport, header_block
from shoal.fetch._policy import AddressPolicy, BlockedAddress
from shoal.settings import Settings
from tests.sites.hostile import HostileSite
from tests.sites.names import MapResolver
from tests.sites.proxy import ForwardProxy, Tap
from tests.sites.socks import SocksProxy
from tests.sites.tls import TestCA

VIA_PROXY = FetchOptions(proxy_type="datacenter", respect_robots=False)


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {"allow_private_networks": True, "fetch_retries": 0}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def site() -> Iterator[HostileSite]:
    s = HostileSite().start()
    yield s
    s.stop()


async def _fail(engine: Engine, url: str, options: FetchOptions = VIA_PROXY) -> FetchError:
    with pytest.raises(FetchError) as info:
        await engine.fetch(url, options)
    return info.value


# ----------------------------------------------------------------------------- https:// proxies


async def test_an_https_proxy_with_credentials_tunnels_tls_inside_tls(
    ca: TestCA, tls_site: HostileSite
) -> None:
    """TLS to the proxy, CONNECT with Proxy-Authorization inside it, then TLS to the site in the
    tunnel. The proxy speaks only TLS: the old transport's clear-text CONNECT got nowhere."""
    with ForwardProxy(require_auth=("user", "pa:ss"), tls=ca.server_context()) as proxy:
        assert proxy.auth_url.startswith("https://user:pa:ss@")
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.auth_url.replace("pa:ss", "pa%3Ass")]},
            ssl_context=ca.client_context(),
        ) as engine:
            resp = await engine.fetch(tls_site.url("/ok?via=https-proxy"), VIA_PROXY)
        assert (resp.status, resp.final_url) == (200, tls_site.url("/ok?via=https-proxy"))
        assert "<title>/ok</title>" in resp.text
        assert (proxy.tunnels, proxy.rejected) == (1, 0)
        assert proxy.targets == [f"127.0.0.1:{tls_site.port}"]
        assert proxy.errors == []


async def test_nothing_the_client_sends_an_https_proxy_is_readable_on_the_wire(
    ca: TestCA, site: HostileSite
) -> None:
    """Through a tap between the engine and the proxy: the bytes start with a TLS handshake
    record, and neither the credentials (plain or base64) nor the request appear in them."""
    with (
        ForwardProxy(require_auth=("user", "hunter2"), tls=ca.server_context()) as proxy,
        Tap(proxy.port) as tap,
    ):
        via_tap = f"https://user:hunter2@127.0.0.1:{tap.port}"
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [via_tap]},
            ssl_context=ca.client_context(),
        ) as engine:
            resp = await engine.fetch(site.url("/ok?secret-path"), VIA_PROXY)
        assert resp.status == 200 and proxy.forwarded == 1
        wire = bytes(tap.sent)
    assert wire[:1] == b"\x16"  # a TLS handshake record, not "GET http://..."
    token = base64.b64encode(b"user:hunter2")
    for secret in (b"hunter2", token, b"Proxy-Authorization", b"secret-path"):
        assert secret not in wire, secret


async def test_an_https_proxy_takes_an_http_target_in_absolute_form(
    ca: TestCA, site: HostileSite
) -> None:
    """An ``http`` target is asked of the proxy as ``GET http://...``, on the TLS connection."""
    with ForwardProxy(require_auth=("user", "pass"), tls=ca.server_context()) as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.auth_url]},
            ssl_context=ca.client_context(),
        ) as engine:
            resp = await engine.fetch(site.url("/headers"), VIA_PROXY)
        assert resp.status == 200
        assert proxy.targets == [site.url("/headers")]
        assert (proxy.forwarded, proxy.tunnels, proxy.rejected) == (1, 0, 0)
        assert "proxy-authorization" not in resp.text.lower()  # the proxy's, not the site's


async def test_an_https_proxy_whose_certificate_does_not_verify_is_a_proxy_error(
    tls_site: HostileSite, ca: TestCA
) -> None:
    """The proxy is verified like any TLS server (here: the system's CAs do not know it); no
    request, credentials included, is sent to a proxy that failed to prove who it is."""
    with ForwardProxy(require_auth=("user", "pass"), tls=ca.server_context()) as proxy:
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [proxy.auth_url]}
        ) as engine:
            err = await _fail(engine, tls_site.url("/ok"))
            assert engine._pools["datacenter"].benched(proxy.auth_url) > 0
        assert err.code == "proxy"
        assert "certificate" in err.message.lower()
        assert proxy.connections == 0 and proxy.targets == []


@pytest.mark.parametrize("tls", [False, True])
async def test_a_refused_tunnel_and_a_407_are_proxy_errors_naming_the_answer(
    ca: TestCA, tls_site: HostileSite, tls: bool
) -> None:
    """CONNECT answered 403 (refused) or 407 (credentials missing) ends with the ``proxy`` code
    and the proxy's answer in the message, over an http:// or an https:// proxy."""
    context = ca.server_context() if tls else None
    with ForwardProxy(require_auth=("user", "pass"), tls=context) as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url]},  # no credentials
            ssl_context=ca.client_context(),
        ) as engine:
            missing = await _fail(engine, tls_site.url("/ok"))
        proxy.require_auth = None
        proxy.fail_with = 403
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url]},
            ssl_context=ca.client_context(),
        ) as engine:
            refused = await _fail(engine, tls_site.url("/ok"))
    assert (missing.code, refused.code) == ("proxy", "proxy")
    assert "refused the tunnel (407: authentication)" in missing.message
    assert "refused the tunnel (403)" in refused.message
    assert proxy.rejected == 1


# ----------------------------------------------------------------------------- SOCKS


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4"])
async def test_http_and_https_through_a_socks_proxy(
    ca: TestCA, site: HostileSite, tls_site: HostileSite, scheme: str
) -> None:
    """A plain and a TLS target through each SOCKS flavour; the proxy is asked for the
    address (a literal stays a literal)."""
    with SocksProxy() as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url(scheme)]},
            ssl_context=ca.client_context(),
        ) as engine:
            plain = await engine.fetch(site.url("/ok?via=socks"), VIA_PROXY)
            secure = await engine.fetch(tls_site.url("/ok?via=socks"), VIA_PROXY)
        assert (plain.status, secure.status) == (200, 200)
        assert "<title>/ok</title>" in plain.text and "<title>/ok</title>" in secure.text
        assert proxy.requests == [
            ("ipv4", "127.0.0.1", site.port),
            ("ipv4", "127.0.0.1", tls_site.port),
        ]
        last = site.log[-1]
        assert last.target == "/ok?via=socks"  # origin form: not an absolute URL
        assert "proxy-authorization" not in last.headers
        assert proxy.errors == []


async def test_socks5_with_credentials_and_with_wrong_ones(site: HostileSite) -> None:
    """RFC 1929 username/password: the right pair connects, a wrong one is a ``proxy`` error
    (and the proxy is benched) before any target is asked for."""
    with SocksProxy(require_auth=("user", "s3cret")) as proxy:
        good = proxy.auth_url("socks5")
        bad = good.replace("s3cret", "wrong")
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [good]}
        ) as engine:
            resp = await engine.fetch(site.url("/ok"), VIA_PROXY)
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [bad]}
        ) as engine:
            err = await _fail(engine, site.url("/ok"))
            assert engine._pools["datacenter"].benched(bad) > 0
        assert resp.status == 200
        assert err.code == "proxy" and "authentication" in err.message.lower()
        assert proxy.auth_failures == 1
        assert proxy.requests == [("ipv4", "127.0.0.1", site.port)]  # the good one's only


async def test_a_socks_proxy_that_refuses_is_a_proxy_error(site: HostileSite) -> None:
    """A SOCKS reply other than success names the target and the proxy's reason."""
    with SocksProxy() as proxy:
        proxy.refuse = True
        async with Engine(
            concurrency=2, settings=_settings(), proxies={"datacenter": [proxy.url("socks5")]}
        ) as engine:
            err = await _fail(engine, site.url("/ok"))
    assert err.code == "proxy"
    assert f"refused the connection to 127.0.0.1:{site.port}" in err.message
    assert "refused" in err.message.lower()
    assert site.hits["/ok"] == 0


async def test_a_socks_proxy_nobody_listens_on_is_a_proxy_error(site: HostileSite) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Engine(
        concurrency=2,
        settings=_settings(),
        proxies={"datacenter": [f"socks5://127.0.0.1:{port}"]},
    ) as engine:
        err = await _fail(engine, site.url("/ok"))
    assert err.code == "proxy" and "cannot reach the proxy" in err.message


async def test_socks5h_hands_the_name_to_the_proxy(site: HostileSite) -> None:
    """With ``socks5h://`` the proxy resolves (its table knows ``site.test``); the name goes
    to it as a name. The engine pre-checks the name as for an HTTP proxy."""
    resolver = MapResolver({"site.test": ["127.0.0.1"]})
    with SocksProxy(hosts={"site.test": "127.0.0.1"}) as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url("socks5h")]},
            resolver=resolver,
        ) as engine:
            resp = await engine.fetch(f"http://site.test:{site.port}/ok", VIA_PROXY)
    assert resp.status == 200
    assert proxy.requests == [("name", "site.test", site.port)]


async def test_socks5_targets_follow_the_engine_s_policy(site: HostileSite) -> None:
    """Through the engine, a ``socks5://`` target name is resolved by the engine's own guarded
    resolver: with private networks allowed, ``site.test`` (127.0.0.1) is fetched, and the
    proxy is handed the checked address; with them refused, it is ``blocked`` and the proxy
    never hears of it. (Before, the engine gave the SOCKS dialler no resolver, so the strictest
    policy refused the first case too.)"""
    names = MapResolver({"site.test": ["127.0.0.1"]})
    url = f"http://site.test:{site.port}/ok"
    with SocksProxy() as proxy:
        async with Engine(
            concurrency=2,
            settings=_settings(),
            proxies={"datacenter": [proxy.url("socks5")]},
            resolver=names,
        ) as engine:
            resp = await engine.fetch(url, VIA_PROXY)
        assert resp.status == 200
        assert proxy.requests == [("ipv4", "127.0.0.1", site.port)]
        async with Engine(
            concurrency=2,
            settings=_settings(allow_private_networks=False),
            proxies={"datacenter": [proxy.url("socks5")]},
            resolver=names,
        ) as engine:
            err = await _fail(engine, url)
        assert err.code == "blocked"
        assert len(proxy.requests) == 1


def _socks_transport(
    proxy_resolver: AbstractResolver, target: AbstractResolver | None
) -> Transport:
    dialer = Dialer(resolver=proxy_resolver, connect_timeout_s=5, target_resolver=target)
    return Transport(
        resolver=proxy_resolver, connect_timeout_s=5, read_timeout_s=5, max_idle=2, dialer=dialer
    )


async def test_socks5_resolves_the_name_here_through_the_guard(site: HostileSite) -> None:
    """With ``socks5://`` the name is resolved by the target resolver (the engine's guard) and
    only the checked address is sent to the proxy; a name the guard refuses never reaches it,
    and without a target resolver the strictest policy applies (fail closed)."""
    names = MapResolver({"site.test": ["127.0.0.1"]})
    head = header_block({"User-Agent": "shoal-test"})
    url = URL(f"http://site.test:{site.port}/ok")
    with SocksProxy() as proxy:
        proxy_url = URL(proxy.url("socks5"))
        allowing = GuardedResolver(names, AddressPolicy(allow_private_networks=True))
        transport = _socks_transport(MapResolver({}), allowing)
        resp = await transport.request(url, head, proxy=proxy_url)
        assert resp.status == 200
        resp.release()
        await transport.aclose()
        assert proxy.requests == [("ipv4", "127.0.0.1", site.port)]

        for target in (GuardedResolver(names, AddressPolicy(allow_private_networks=False)), None):
            transport = _socks_transport(names, target)
            with pytest.raises(BlockedAddress):
                await transport.request(url, head, proxy=proxy_url)
            await transport.aclose()
        assert len(proxy.requests) == 1 and proxy.connections == 1


async def test_socks4_needs_an_ipv4_address(site: HostileSite) -> None:
    """SOCKS4 carries IPv4 only: a name with only IPv6 addresses is refused before dialling."""
    names = MapResolver({"v6only.test": ["::1"]})
    with SocksProxy() as proxy:
        transport = _socks_transport(
            names, GuardedResolver(names, AddressPolicy(allow_private_networks=True))
        )
        with pytest.raises(ProxyError, match="no IPv4 address"):
            await transport.request(
                URL(f"http://v6only.test:{site.port}/ok"), b"", proxy=URL(proxy.url("socks4"))
            )
        await transport.aclose()
        assert proxy.connections == 0


# ----------------------------------------------------------------------------- Happy Eyeballs


@pytest.fixture
def blackhole(site: HostileSite) -> Iterator[None]:
    """``[::1]:<site's port>`` where SYNs go unanswered: a listener with a backlog of 0, its
    one queue slot taken by a connection nobody accepts, so Linux drops further SYNs."""
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", site.port))
    listener.listen(0)
    filler = socket.create_connection(("::1", site.port), timeout=5)
    probe = socket.socket(socket.AF_INET6)
    probe.setblocking(False)
    assert probe.connect_ex(("::1", site.port)) == errno.EINPROGRESS
    _, writable, _ = select.select([], [probe], [], 0.5)
    assert writable == [], "the blackhole answered a SYN"  # the premise of the test
    try:
        yield
    finally:
        for s in (probe, filler, listener):
            s.close()


async def test_a_blackholed_first_address_costs_the_stagger_not_the_timeout(
    site: HostileSite, blackhole: None
) -> None:
    """The name answers ``::1`` (blackholed) first, then 127.0.0.1 (the site). Tried one after
    the other, the first would eat the whole 20 s connect timeout; raced RFC 8305 style, the
    second starts 250 ms later and wins (the bound is far from both, for a loaded machine)."""
    resolver = MapResolver({"dual.test": ["::1", "127.0.0.1"]})
    async with Engine(
        concurrency=1, settings=_settings(connect_timeout_s=20.0), resolver=resolver
    ) as engine:
        started = time.monotonic()
        resp = await engine.fetch(
            f"http://dual.test:{site.port}/ok", FetchOptions(respect_robots=False, timeout_s=30)
        )
        elapsed = time.monotonic() - started
    assert resp.status == 200
    assert 0.2 <= elapsed < 10, elapsed
    assert resolver.asked == ["dual.test"]  # dialled what the guarded resolver answered


async def test_every_address_refusing_is_one_connect_error(site: HostileSite) -> None:
    """All addresses fail (nothing listens on 127.0.0.2 or 127.0.0.3 at that port): the error
    is ``connect``, after both were tried, well within the timeout."""
    resolver = MapResolver({"gone.test": ["127.0.0.2", "127.0.0.3"]})
    async with Engine(
        concurrency=1, settings=_settings(connect_timeout_s=3.0), resolver=resolver
    ) as engine:
        started = time.monotonic()
        err = await _fail(
            engine, f"http://gone.test:{site.port}/ok", FetchOptions(respect_robots=False)
        )
    assert err.code == "connect"
    assert time.monotonic() - started < 1.5


async def test_a_proxy_name_resolving_to_nothing_is_a_proxy_error(site: HostileSite) -> None:
    """A resolver may answer an empty list instead of failing: that is "no address" (here for
    a proxy's own name, which the proxied transport resolves without the guard)."""
    dialer = Dialer(resolver=MapResolver({"empty.test": []}), connect_timeout_s=3)
    transport = Transport(
        resolver=MapResolver({}), connect_timeout_s=3, read_timeout_s=3, max_idle=1, dialer=dialer
    )
    with pytest.raises(ProxyError, match="no addresses for 'empty.test'"):
        await transport.request(URL(site.url("/ok")), b"", proxy=URL("http://empty.test:3128"))
    await transport.aclose()
