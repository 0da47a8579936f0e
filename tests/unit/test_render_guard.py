"""Every connection a rendered page makes meets the fetch engine's SSRF guard.

The site is reached as ``shop.test`` (on the operator's allow-list, mapped to 127.0.0.1 by the
test's resolver: the browser never resolves a name itself). An "internal service" listens on
127.0.0.2, which the guard refuses; the page tries it from script by literal, by a name that
resolves to it (``rebind.test``), through a redirect of the site, as an image, an iframe and a
websocket, plus the cloud metadata address and a private one. The listener must see nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from shoal.errors import FetchError
from shoal.render import Renderer
from shoal.settings import Settings
from tests.sites.names import MapResolver
from tests.sites.proxy import ForwardProxy, dead_proxy_url
from tests.sites.render import PRICE, Listener, RenderSite, need_browser
from tests.sites.socks import SocksProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICE_HTML = f'<span class="price">{PRICE}</span>'


@pytest.fixture(scope="module")
def resolver() -> MapResolver:
    return MapResolver(
        {"shop.test": ["127.0.0.1"], "rebind.test": ["127.0.0.2"], "mixed.test":
         ["93.184.216.34", "127.0.0.2"]}
    )  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def renderer(resolver: MapResolver) -> AsyncIterator[Renderer]:
    need_browser()
    settings = Settings(allow_private_networks=False, allow_hosts="shop.test")  # type: ignore[call-arg]
    async with Renderer(settings, resolver=resolver) as r:
        yield r


async def test_script_cannot_reach_internal_addresses(
    renderer: Renderer, render_site: RenderSite, internal: Listener, resolver: MapResolver
) -> None:
    p = internal.port
    targets = [
        f"http://127.0.0.2:{p}/steal",
        f"http://rebind.test:{p}/steal",
        f"http://mixed.test:{p}/steal",
        f"http://[::ffff:127.0.0.2]:{p}/steal",
        f"http://0x7f.0.0.2:{p}/steal",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
    ]
    url = render_site.url(
        f"/ssrf?targets={','.join(targets)}&ws=ws://127.0.0.2:{p}/ws", "shop.test"
    )
    page = await renderer.render(url, wait_for={"selector": "body[data-done]"}, deadline_s=20)
    assert PRICE_HTML in page.html  # the page itself rendered, through its allowed name
    assert internal.connections == 0 and internal.received == b""
    refused = " ".join(page.refused)
    for host in ("127.0.0.2", "rebind.test", "mixed.test", "169.254.169.254", "10.0.0.1"):
        assert f"{host}:" in refused
    assert "blocked" in refused and "connect" not in refused
    # the names were resolved by the guard's resolver, never by the browser
    assert {"shop.test", "rebind.test", "mixed.test"} <= set(resolver.asked)
    # the redirect hop was asked of the site and refused at its target
    assert render_site.hits["/redirect"] >= len(targets)


async def test_a_page_on_a_blocked_host_is_blocked(renderer: Renderer, internal: Listener) -> None:
    for url in (f"http://127.0.0.2:{internal.port}/", f"http://rebind.test:{internal.port}/"):
        with pytest.raises(FetchError) as info:
            await renderer.render(url, deadline_s=10)
        assert info.value.code == "blocked", info.value.message
    assert internal.connections == 0


async def test_a_redirect_to_an_internal_address_is_blocked(
    renderer: Renderer, render_site: RenderSite, internal: Listener
) -> None:
    target = f"http://127.0.0.2:{internal.port}/"
    with pytest.raises(FetchError) as info:
        await renderer.render(render_site.url(f"/redirect?to={target}", "shop.test"), deadline_s=10)
    assert info.value.code == "blocked"
    assert internal.connections == 0


async def test_an_unknown_name_is_dns(renderer: Renderer) -> None:
    with pytest.raises(FetchError) as info:
        await renderer.render("http://nowhere.test/", deadline_s=10)
    assert info.value.code == "dns"


async def test_an_allowed_page_renders_through_its_name(
    renderer: Renderer, render_site: RenderSite
) -> None:
    t0 = time.monotonic()
    pages = await asyncio.gather(
        *(
            renderer.render(render_site.url("/xhr", "shop.test"), wait_for="networkidle")
            for _ in range(3)
        )
    )
    assert all(PRICE_HTML in p.html and not p.refused for p in pages)
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------- proxy pools


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxied_renderer(resolver: MapResolver) -> AsyncIterator[Renderer]:
    """The site's own address allowed (127.0.0.1: forward proxies here cannot resolve test
    names), the internal one (127.0.0.2) not."""
    need_browser()
    settings = Settings(  # type: ignore[call-arg]
        allow_private_networks=False, allow_hosts="shop.test,127.0.0.1/32"
    )
    async with Renderer(settings, resolver=resolver) as r:
        yield r


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4"])
async def test_a_page_renders_through_a_socks_proxy_of_the_pool(
    proxied_renderer: Renderer, render_site: RenderSite, internal: Listener, scheme: str
) -> None:
    with SocksProxy(require_auth=None, hosts={"shop.test": "127.0.0.1"}) as proxy:
        url = render_site.url(f"/ssrf?targets=http://127.0.0.2:{internal.port}/", "shop.test")
        page = await proxied_renderer.render(
            url, wait_for={"selector": "body[data-done]"}, proxy=proxy.url(scheme)
        )
        assert PRICE_HTML in page.html
        asked = {(host, port) for _, host, port in proxy.requests}
        # socks5/socks4: Shoal resolved the name through the guard and asked for the address;
        # socks5h: the proxy was given the name (pre-checked here)
        expect = "shop.test" if scheme == "socks5h" else "127.0.0.1"
        assert (expect, render_site.port) in asked
        assert all(host != "127.0.0.2" for host, _ in asked)
    assert internal.connections == 0


async def test_a_page_renders_through_an_http_proxy_with_credentials(
    proxied_renderer: Renderer, render_site: RenderSite, internal: Listener
) -> None:
    with ForwardProxy(require_auth=("user", "pw")) as proxy:
        url = render_site.url(f"/ssrf?targets=http://127.0.0.2:{internal.port}/")
        page = await proxied_renderer.render(
            url, wait_for={"selector": "body[data-done]"}, proxy=proxy.auth_url
        )
        assert PRICE_HTML in page.html
        assert f"127.0.0.1:{render_site.port}" in proxy.targets  # a CONNECT tunnel per connection
        assert not any(t.startswith("127.0.0.2") for t in proxy.targets)
        assert proxy.rejected == 0
    assert internal.connections == 0


async def test_a_dead_proxy_is_the_proxy_code(
    proxied_renderer: Renderer, render_site: RenderSite
) -> None:
    with pytest.raises(FetchError) as info:
        await proxied_renderer.render(
            render_site.url("/plain"), proxy=dead_proxy_url(), deadline_s=10
        )
    assert info.value.code == "proxy"
