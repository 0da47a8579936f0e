"""What a rendered page's requests carry and where its main frame may go, in real Chromium.

The job's headers reach the URL's own host and origin only (the document, its redirect hops,
same-origin ``fetch()``), never another site; the browser names itself as Google's renderer
does, or as the caller's ``User-Agent`` says; every main-frame navigation after the first (an
HTTP redirect hop, a script redirect, a meta refresh) is asked of ``allow_navigation``, which the
engine makes from robots.txt (``Engine.navigation_check``). The site is reached as
``shop.test``; ``other.test`` is a second site (another host) on 127.0.0.1, both through the
tests' resolver.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from shoal.errors import FetchError
from shoal.fetch import Engine, FetchOptions
from shoal.render import Renderer
from shoal.render._requests import bot_user_agent
from shoal.settings import Settings
from tests.sites.names import MapResolver
from tests.sites.render import PRICE, RenderSite, need_browser

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICE_HTML = f'<span class="price">{PRICE}</span>'
SECRETS = {"Authorization": "Bearer s3cret", "Cookie": "sid=abc", "X-Shoal-Test": "yes"}


def _settings() -> Settings:
    return Settings(allow_private_networks=True, render_max_pages=4)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def resolver() -> MapResolver:
    return MapResolver({"shop.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})


@pytest.fixture(scope="module")
def other() -> Iterator[RenderSite]:
    """A second site: another host (``other.test``) on its own port."""
    site = RenderSite().start()
    try:
        yield site
    finally:
        site.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def renderer(resolver: MapResolver) -> AsyncIterator[Renderer]:
    need_browser()
    async with Renderer(_settings(), resolver=resolver) as r:
        yield r


def _pre(html: str, ident: str) -> str:
    found = re.search(f'<pre id="{ident}">(.*?)</pre>', html, re.S)
    assert found is not None, html
    return found.group(1).replace("&amp;", "&").replace("&quot;", '"')


def _logged(site: RenderSite, path: str) -> list[dict[str, str]]:
    """The headers of every request ``site`` got for ``path`` (path and query)."""
    return [headers for _, p, headers in site.log if p == path]


async def test_headers_reach_the_document_its_hops_and_same_origin_fetch_only(
    renderer: Renderer, render_site: RenderSite, other: RenderSite
) -> None:
    other_origin = other.url("", "other.test")
    target = f"/requests?other={other_origin}"
    url = render_site.url(f"/redirect?to={target}", "shop.test")
    page = await renderer.render(
        url,
        wait_for={"selector": ".price:not(:empty)"},
        headers=SECRETS,
        block_resources=(),  # the image too
        deadline_s=20,
    )
    assert PRICE_HTML in page.html and page.final_url == render_site.url(target, "shop.test")
    # the redirect hop and the document it led to
    for path in ("/redirect?to=" + target, target):
        (sent,) = _logged(render_site, path)
        assert {k: sent.get(k) for k in SECRETS} == SECRETS, (path, sent)
    # the page's fetch() of its own origin: the rendered DOM holds what /headers answered it
    seen = json.loads(_pre(page.html, "xhr"))
    assert {k: seen.get(k) for k in SECRETS} == SECRETS
    # the other site saw the page's image, script and fetch(), without any of the headers
    paths = [p for _, p, _ in other.log]
    assert {"/headers?img", "/headers?js", "/headers?fetch"} <= set(paths), paths
    for _, _, sent in other.log:
        assert not {k.lower() for k in sent} & {k.lower() for k in SECRETS}, sent


async def test_a_redirect_to_another_host_takes_no_header_along(
    renderer: Renderer, render_site: RenderSite, other: RenderSite
) -> None:
    away = other.url("/headers?away", "other.test")
    page = await renderer.render(
        render_site.url(f"/redirect?to={away}", "shop.test"), headers=SECRETS
    )
    assert page.final_url == away
    (sent,) = _logged(other, "/headers?away")
    assert not {k.lower() for k in sent} & {k.lower() for k in SECRETS}, sent


async def test_the_browser_names_itself_as_googles_renderer_does(
    renderer: Renderer, render_site: RenderSite, other: RenderSite
) -> None:
    settings = _settings()
    chromium = renderer.pool.browsers[0].user_agent
    assert "HeadlessChrome/" in chromium  # what it would say by itself
    expected = bot_user_agent(chromium, settings.user_agent)
    assert expected.endswith(f" (compatible; {settings.user_agent})")
    assert "HeadlessChrome" not in expected and re.search(r" Chrome/\d+\.", expected)

    # at 127.0.0.1 (a secure context, as https is: client hints are sent only to those)
    page = await renderer.render(render_site.url("/headers?ua"))
    sent = json.loads(re.sub(r"<[^>]+>", "", page.html).replace("&quot;", '"'))
    assert sent["User-Agent"] == expected
    assert "HeadlessChrome" not in sent.get("sec-ch-ua", "") and "Chromium" in sent["sec-ch-ua"]
    # script reads the same, and the page's requests to another site carry it too
    other_origin = other.url("", "other.test")
    page = await renderer.render(
        render_site.url(f"/requests?other={other_origin}&ua", "shop.test"),
        wait_for={"selector": ".price:not(:empty)"},
    )
    assert _pre(page.html, "ua") == expected
    assert _logged(other, "/headers?js")[-1]["User-Agent"] == expected


async def test_a_callers_user_agent_replaces_the_browsers(
    renderer: Renderer, render_site: RenderSite
) -> None:
    page = await renderer.render(
        render_site.url("/headers?own-ua", "shop.test"), headers={"user-agent": "PriceWatch/2.0"}
    )
    sent = json.loads(re.sub(r"<[^>]+>", "", page.html).replace("&quot;", '"'))
    assert sent["User-Agent"] == "PriceWatch/2.0"
    assert "sec-ch-ua" not in sent  # no brands that could contradict the caller's string


async def test_headers_shoal_may_not_send_are_refused(renderer: Renderer) -> None:
    with pytest.raises(ValueError, match="Host"):
        await renderer.render("http://shop.test/", headers={"Host": "evil.test"})


# ---------------------------------------------------------------- navigations


class Recorder:
    """An ``allow_navigation`` that refuses URLs containing ``/private`` and keeps every ask."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, url: str) -> FetchError | None:
        self.asked.append(url)
        if "/private" in url:
            return FetchError("robots_disallowed", f"robots.txt disallows {url}")
        return None


@pytest.mark.parametrize(
    "path", ["/redirect?to=/private/a", "/js-redirect?to=/private/b", "/meta-refresh?to=/private/c"]
)
async def test_a_refused_navigation_ends_the_render_with_its_error(
    renderer: Renderer, render_site: RenderSite, path: str
) -> None:
    check = Recorder()
    hits = sum(n for p, n in render_site.hits.items() if p.startswith("/private"))
    url = render_site.url(path, "shop.test")
    with pytest.raises(FetchError) as info:
        await renderer.render(
            url, wait_for={"selector": ".price:not(:empty)"}, allow_navigation=check, deadline_s=15
        )
    refused = render_site.url("/private/" + path[-1], "shop.test")
    assert info.value.code == "robots_disallowed" and info.value.final_url == refused
    assert check.asked == [refused]  # the first URL is the caller's to check (Engine.browse)
    assert sum(n for p, n in render_site.hits.items() if p.startswith("/private")) == hits


async def test_allowed_navigations_are_asked_and_followed(
    renderer: Renderer, render_site: RenderSite
) -> None:
    check = Recorder()
    page = await renderer.render(
        render_site.url("/redirect?to=/js-redirect", "shop.test"),
        wait_for={"selector": ".price:not(:empty)"},
        allow_navigation=check,
    )
    assert PRICE_HTML in page.html and page.final_url == render_site.url("/plain", "shop.test")
    hop = render_site.url("/js-redirect", "shop.test")
    assert check.asked == [hop, render_site.url("/plain", "shop.test")]


async def test_robots_txt_of_each_host_decides_through_the_engine(
    renderer: Renderer, render_site: RenderSite, other: RenderSite, resolver: MapResolver
) -> None:
    """The engine's check reads robots.txt (``Disallow: /private``) of the host navigated to,
    ``other.test``'s fetched while the page holds the job's only slot (concurrency 1)."""
    options = FetchOptions(timeout_s=15)
    async with Engine(concurrency=1, settings=_settings(), resolver=resolver) as engine:

        async def render(url: str, opts: FetchOptions = options) -> str:
            async with engine.browse(url, opts) as proxy:
                page = await renderer.render(
                    url, proxy=proxy, allow_navigation=engine.navigation_check(opts)
                )
            return page.final_url

        away = other.url("/private/x", "other.test")
        with pytest.raises(FetchError) as info:
            await render(render_site.url(f"/redirect?to={away}", "shop.test"))
        assert info.value.code == "robots_disallowed" and info.value.final_url == away
        assert away in info.value.message
        robots = [h for _, p, h in other.log if p == "/robots.txt"]
        assert [h["Host"] for h in robots] == [f"other.test:{other.port}"]
        assert not [p for _, p, _ in other.log if p.startswith("/private")]

        # an allowed host change renders (the robots.txt fetch needed no second slot) ...
        fine = other.url("/plain", "other.test")
        assert await render(render_site.url(f"/redirect?to={fine}", "shop.test")) == fine
        # ... and without respect_robots nothing is asked
        assert engine.navigation_check(FetchOptions(respect_robots=False)) is None
        lax = FetchOptions(timeout_s=15, respect_robots=False)
        assert await render(render_site.url(f"/redirect?to={away}", "shop.test"), lax) == away
