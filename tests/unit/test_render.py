"""The renderer in real Chromium against ``tests.sites.render``: scripts, waits, hostile pages.

One browser pool (``Renderer``) for the module: launching costs ~1 s, a page ~50-300 ms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from shoal.errors import FetchError, RenderUnavailable
from shoal.render import Renderer, WaitFor, _procmem, missing_piece
from shoal.settings import Settings
from tests.sites.render import PRICE, RenderSite, need_browser

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICE_HTML = f'<span class="price">{PRICE}</span>'


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "allow_private_networks": True,
        "render_js_heap_mb": 64,  # /oom crashes its tab in ~0.2 s
        "render_max_pages": 4,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def renderer() -> AsyncIterator[Renderer]:
    need_browser()
    async with Renderer(_settings()) as r:
        yield r


async def _fail(renderer: Renderer, url: str, **kw: object) -> FetchError:
    with pytest.raises(FetchError) as info:
        await renderer.render(url, **kw)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize("path", ["/timer", "/xhr", "/scroll"])
async def test_price_put_in_by_script_is_in_the_rendered_dom(
    renderer: Renderer, render_site: RenderSite, path: str
) -> None:
    served = render_site.url(path)
    page = await renderer.render(served, wait_for={"selector": ".price:not(:empty)"})
    assert PRICE_HTML in page.html
    assert page.status == 200 and page.final_url == served
    assert page.headers["content-type"].startswith("text/html")


async def test_load_alone_misses_a_timer_and_a_delay_catches_it(
    renderer: Renderer, render_site: RenderSite
) -> None:
    early = await renderer.render(render_site.url("/timer?ms=5000"), wait_for="load")
    assert PRICE_HTML not in early.html  # load does not wait for timers
    late = await renderer.render(render_site.url("/timer"), wait_for={"ms": 600})
    assert PRICE_HTML in late.html
    assert late.timings["wait"] >= 0.6


async def test_scroll_content_is_shown_after_load(
    renderer: Renderer, render_site: RenderSite
) -> None:
    page = await renderer.render(render_site.url("/scroll"), wait_for="load")
    assert PRICE_HTML in page.html


async def test_a_selector_there_at_load_spares_the_scroll(
    renderer: Renderer, render_site: RenderSite
) -> None:
    """Scrolling costs a layout and paint of the page's end: a waited-for selector that is
    there at load skips it; otherwise (and for load) the page is scrolled, and a viewport
    screenshot still shows the page as it opens, not its end."""
    tall = render_site.url("/tall")
    spared = await renderer.render(tall, wait_for={"selector": ".price:not(:empty)"})
    assert PRICE_HTML in spared.html and "data-scrolled" not in spared.html
    scrolled = await renderer.render(tall, wait_for={"selector": "body[data-scrolled]"})
    assert 'data-scrolled="1"' in scrolled.html
    loaded = await renderer.render(tall, wait_for="load")
    assert 'data-scrolled="1"' in loaded.html
    top = await renderer.render(tall, wait_for={"selector": ".price"}, screenshot="viewport")
    back = await renderer.render(tall, wait_for="load", screenshot="viewport")
    assert top.screenshot_png is not None and top.screenshot_png == back.screenshot_png


async def test_networkidle_waits_for_the_xhr(renderer: Renderer, render_site: RenderSite) -> None:
    page = await renderer.render(render_site.url("/xhr"), wait_for="networkidle")
    assert PRICE_HTML in page.html


async def test_a_page_that_never_goes_idle_times_out_on_time(
    renderer: Renderer, render_site: RenderSite
) -> None:
    t0 = time.monotonic()
    error = await _fail(
        renderer, render_site.url("/never-idle"), wait_for="networkidle", deadline_s=2
    )
    took = time.monotonic() - t0
    assert error.code == "timeout"
    assert 2.0 <= took < 4.0
    # the same page with wait_for load renders
    page = await renderer.render(render_site.url("/never-idle"), wait_for="load")
    assert PRICE_HTML in page.html


async def test_a_page_looping_forever_times_out_and_the_pool_goes_on(
    renderer: Renderer, render_site: RenderSite
) -> None:
    t0 = time.monotonic()
    error = await _fail(renderer, render_site.url("/loop"), deadline_s=2)
    assert error.code == "timeout"
    assert time.monotonic() - t0 < 4.0
    # the looping renderer is killed with its context; the next pages render as usual
    pages = await asyncio.gather(
        *(renderer.render(render_site.url("/plain"), deadline_s=10) for _ in range(4))
    )
    assert all(PRICE_HTML in p.html for p in pages)


async def test_dialogs_are_dismissed_and_popups_closed(
    renderer: Renderer, render_site: RenderSite
) -> None:
    page = await renderer.render(
        render_site.url("/dialogs"), wait_for={"selector": ".price:not(:empty)"}, deadline_s=10
    )
    # the page's script goes on past each dialog only once it is answered, and writes the
    # price only when both its popups are closed
    assert PRICE_HTML in page.html
    assert page.dialogs == 3 and page.popups == 2


async def test_a_tab_that_crashes_is_tried_once_more_then_render_failed(
    renderer: Renderer, render_site: RenderSite
) -> None:
    before = render_site.hits["/oom"]
    error = await _fail(renderer, render_site.url("/oom"), deadline_s=20)
    assert error.code == "render_failed"
    assert error.attempts == 2 and "crashed" in error.message
    assert render_site.hits["/oom"] - before == 2
    page = await renderer.render(render_site.url("/plain"))
    assert PRICE_HTML in page.html


async def test_a_script_redirect_and_broken_globals_do_not_break_a_render(
    renderer: Renderer, render_site: RenderSite
) -> None:
    moved = await renderer.render(
        render_site.url("/js-redirect"), wait_for={"selector": ".price:not(:empty)"}
    )
    assert moved.final_url == render_site.url("/plain") and PRICE_HTML in moved.html
    broken = await renderer.render(render_site.url("/hostile-globals"))
    assert PRICE_HTML in broken.html


async def test_a_huge_dom_renders_whole(renderer: Renderer, render_site: RenderSite) -> None:
    page = await renderer.render(render_site.url("/huge?n=100000"), deadline_s=30)
    assert page.html.count('<div class="item">') == 100_000
    assert PRICE_HTML in page.html


async def test_downloads_are_refused(renderer: Renderer, render_site: RenderSite) -> None:
    error = await _fail(renderer, render_site.url("/download"), deadline_s=10)
    assert error.code == "render_failed"
    assert "download" in error.message


async def test_images_media_and_fonts_are_blocked_by_default(
    renderer: Renderer, render_site: RenderSite
) -> None:
    blocked = [render_site.hits[p] for p in ("/img.png", "/font.woff2", "/video.mp4")]
    page = await renderer.render(render_site.url("/images"), wait_for="networkidle")
    assert PRICE_HTML in page.html
    assert [render_site.hits[p] for p in ("/img.png", "/font.woff2", "/video.mp4")] == blocked
    await renderer.render(render_site.url("/images"), wait_for="networkidle", block_resources=())
    assert render_site.hits["/img.png"] == blocked[0] + 1


async def test_no_cookie_or_storage_survives_between_pages(
    renderer: Renderer, render_site: RenderSite
) -> None:
    first = await renderer.render(render_site.url("/state"))
    second = await renderer.render(render_site.url("/state"))
    assert '<span class="price">none|none</span>' in first.html
    assert '<span class="price">none|none</span>' in second.html


async def test_screenshots_viewport_and_full_page(
    renderer: Renderer, render_site: RenderSite
) -> None:
    view = await renderer.render(render_site.url("/scroll"), screenshot="viewport")
    full = await renderer.render(render_site.url("/scroll"), screenshot="full_page")
    assert view.screenshot_png is not None and full.screenshot_png is not None
    for png in (view.screenshot_png, full.screenshot_png):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(view.screenshot_png[20:24], "big")
    full_height = int.from_bytes(full.screenshot_png[20:24], "big")
    assert height == 800 and full_height > 5000


async def test_a_killed_browser_is_replaced_and_the_page_tried_again(
    render_site: RenderSite,
) -> None:
    need_browser()
    async with Renderer(_settings()) as renderer:
        pooled = renderer.pool.browsers[0]
        hits = render_site.hits["/timer"]
        slow = asyncio.ensure_future(
            renderer.render(render_site.url("/timer"), wait_for={"ms": 3000}, deadline_s=20)
        )
        deadline = time.monotonic() + 10
        while render_site.hits["/timer"] == hits:  # the page is loading
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        pid = _procmem.find_pid(pooled.marker)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the browser process itself
        page = await slow
        assert page.attempts == 2 and PRICE_HTML in page.html
        assert renderer.pool.launched == 2 and renderer.pool.crashed == 1


async def test_a_browser_is_recycled_after_n_pages(render_site: RenderSite) -> None:
    need_browser()
    async with Renderer(_settings(render_recycle_pages=3)) as renderer:
        first = renderer.pool.browsers[0].browser
        for _ in range(3):
            await renderer.render(render_site.url("/plain"))
        deadline = time.monotonic() + 10
        while first.is_connected():  # closed once its last page is
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        page = await renderer.render(render_site.url("/plain"))
        assert PRICE_HTML in page.html
        assert renderer.pool.recycled == 1 and renderer.pool.launched == 2


async def test_a_browser_over_its_memory_cap_is_recycled(render_site: RenderSite) -> None:
    need_browser()
    async with Renderer(_settings(render_recycle_mb=64)) as renderer:
        pooled = renderer.pool.browsers[0]
        await renderer.render(render_site.url("/plain"))
        assert pooled.memory_bytes() > 64 * 2**20  # the browser's real process tree (PSS)
        await renderer.pool.check_memory(pooled)  # what every 25th page does
        deadline = time.monotonic() + 10
        while pooled.browser.is_connected():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        page = await renderer.render(render_site.url("/plain"))
        assert PRICE_HTML in page.html
        assert renderer.pool.recycled == 1 and renderer.pool.launched == 2


async def test_the_operator_cap_bounds_pages_open(render_site: RenderSite) -> None:
    need_browser()
    async with Renderer(_settings(render_max_pages=2)) as renderer:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, sum(b.open_pages for b in renderer.pool.browsers))
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        pages = await asyncio.gather(
            *(renderer.render(render_site.url("/timer"), wait_for={"ms": 350}) for _ in range(6))
        )
        watcher.cancel()
        assert all(PRICE_HTML in p.html for p in pages)
        assert peak == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_wait_for_spellings() -> None:
    assert WaitFor.parse("networkidle").kind == "networkidle"
    assert WaitFor.parse({"selector": ".p"}).selector == ".p"
    assert WaitFor.parse({"ms": 500}).ms == 500
    for bad in ("idle", {"ms": -1}, {"selector": ""}, {"ms": 5, "selector": ".p"}):
        with pytest.raises(ValueError):
            WaitFor.parse(bad)  # type: ignore[arg-type]


async def test_without_a_browser_the_missing_piece_is_named(tmp_path: os.PathLike[str]) -> None:
    settings = _settings(render_executable=str(tmp_path) + "/no-chromium")
    assert "SHOAL_RENDER_EXECUTABLE" in (missing_piece(settings) or "")
    with pytest.raises(RenderUnavailable, match="not an executable"):
        async with Renderer(settings):
            pass
