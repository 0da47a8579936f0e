"""Render one URL in a fresh browser context, within one deadline, behind the fetch guard.

    async with Renderer(settings) as renderer:
        page = await renderer.render(url, wait_for={"selector": ".price"}, deadline_s=30)

Per page: a new SOCKS5 guard listener (``_socks``) and a new browser context using it as its
proxy (no cookies, storage, cache or service workers shared between URLs or jobs; service
workers blocked, downloads refused), one tab; dialogs dismissed, popups closed as they open;
``block_resources``, the caller's ``headers``, the User-Agent and the check of each navigation
(``allow_navigation``: robots.txt) by DevTools request interception (``_requests``). The
deadline covers
everything from the moment the page has its slot (``render_max_pages``): navigation, the wait,
the scroll, serialising the DOM and the screenshot. Closing the context runs after the answer,
still holding the slot, so a page that loops forever in script costs its slot until Chromium
has killed its renderer, never the caller's time.

A tab that crashes (``page.on("crash")``: out of memory, killed renderer) or a browser that
dies is replaced and the URL tried once more within what is left of the deadline; a second
crash is ``render_failed``. Errors are ``FetchError``s with the contract's codes: ``timeout``,
``render_failed``, ``invalid_url``, for the main document ``blocked`` / ``dns`` /
``connect`` / ``proxy`` as the guard proxy saw them, and whatever ``allow_navigation`` answered
for a navigation it refused (``robots_disallowed`` naming the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from shoal.errors import FetchError
from shoal.fetch._policy import AddressPolicy
from shoal.headers import header_problem

from ._models import DEFAULT_BLOCK, RESOURCE_TYPES, Rendered, Screenshot, WaitFor
from ._pool import BrowserPool, PooledBrowser, find_browser
from ._requests import AllowNavigation, Requests
from ._socks import GuardProxy, guard_dialers

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from shoal.settings import Settings

T = TypeVar("T")
#: closing a context whose renderer is stuck in script: Chromium kills the renderer; past this
#: the browser is treated as broken and replaced
_CLOSE_S = 10.0
#: scroll to the end, then let two frames pass so scroll handlers have run (a page may have
#: replaced any of these: the timer is the fallback, and a failure is no failure of the page)
_SCROLL = """async () => {
  try { window.scrollTo(0, document.documentElement.scrollHeight); } catch (e) {}
  await new Promise(r => {
    setTimeout(r, 100);
    try { requestAnimationFrame(() => requestAnimationFrame(r)); } catch (e) { r(); }
  });
}"""
#: the scroll alone, when a wait after it gives the handlers their time (a selector, a delay)
_SCROLL_ONLY = """() => {
  try { window.scrollTo(0, document.documentElement.scrollHeight); } catch (e) {}
}"""
_SCROLL_TOP = """() => { try { window.scrollTo(0, 0); } catch (e) {} }"""


class _Crashed(Exception):
    """The tab or the browser died under this page."""


class Renderer:
    """Renders pages in a pool of browsers (see the module docstring). One per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: AbstractResolver | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._policy = policy or AddressPolicy.from_settings(settings)
        self._resolver = resolver
        self._slots = asyncio.Semaphore(settings.render_max_pages)
        self._pool: BrowserPool | None = None
        self._launch_guard: GuardProxy | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        self.pages = 0
        self.render_seconds = 0.0

    async def __aenter__(self) -> Renderer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def pool(self) -> BrowserPool:
        if self._pool is None:
            raise RuntimeError("Renderer.start() first")
        return self._pool

    async def start(self) -> None:
        """Find the browser (``RenderUnavailable`` naming what is missing) and launch one."""
        executable = find_browser(self._settings)
        if self._resolver is None:
            import aiohttp

            self._resolver = aiohttp.ThreadedResolver()
        self._dialers = guard_dialers(
            self._policy, self._resolver, self._settings.connect_timeout_s
        )
        self._launch_guard = await self._guard(None).start()
        self._pool = BrowserPool(self._settings, executable, launch_proxy=self._launch_guard.url)
        await self._pool.warm()  # launch now: a missing piece fails here, not per URL

    async def aclose(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._pool is not None:
            await self._pool.aclose()
        if self._launch_guard is not None:
            await self._launch_guard.close()

    def _guard(self, upstream: str | None) -> GuardProxy:
        direct, proxied = self._dialers
        assert self._resolver is not None
        return GuardProxy(
            policy=self._policy,
            direct=direct,
            proxied=proxied,
            resolver=self._resolver,
            upstream=upstream,
        )

    # ------------------------------------------------------------------ one URL
    async def render(
        self,
        url: str,
        *,
        wait_for: str | dict[str, object] | WaitFor | None = "load",
        block_resources: Iterable[str] = DEFAULT_BLOCK,
        deadline_s: float = 30.0,
        screenshot: Screenshot | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        allow_navigation: AllowNavigation | None = None,
    ) -> Rendered:
        """The page at ``url`` as rendered (see the module docstring for errors).

        ``headers``: the job's, sent over ``SHOAL_DEFAULT_HEADERS`` to the URL's own host and
        origin only (``_requests``); a ``User-Agent`` among them replaces the browser's.
        ``allow_navigation``: asked of every main-frame navigation after the first request
        (redirect hops, script redirects, meta refresh); the error it answers ends the render."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError("invalid_url", f"cannot render {url!r}: not an http(s) URL")
        wait = WaitFor.parse(wait_for)
        block = frozenset(block_resources)
        if not block <= RESOURCE_TYPES:
            raise ValueError(f"unknown resource types: {sorted(block - RESOURCE_TYPES)}")
        sent = _headers(self._settings.default_headers, headers or {})
        await self._slots.acquire()
        held = True  # the slot passes to each attempt, whose cleanup gives it back
        started = time.monotonic()
        end = started + deadline_s
        try:
            async with asyncio.timeout_at(_loop_time(end)):
                for attempt in (1, 2):
                    if not held:
                        await self._slots.acquire()
                    held = False
                    try:
                        page = await self._attempt(
                            url, wait, block, screenshot, proxy, sent, allow_navigation
                        )
                    except _Crashed as exc:
                        if attempt == 2:
                            raise FetchError(
                                "render_failed",
                                f"the browser crashed twice rendering {url}: {exc}",
                                final_url=url,
                                attempts=2,
                            ) from exc
                        continue
                    page.attempts = attempt
                    page.timings["total"] = time.monotonic() - started
                    self.pages += 1
                    return page
        except TimeoutError as exc:
            raise FetchError(
                "timeout", f"not rendered within {deadline_s:g} s", final_url=url
            ) from exc
        finally:
            if held:
                self._slots.release()
            self.render_seconds += time.monotonic() - started
        raise AssertionError("unreachable")

    async def _attempt(
        self,
        url: str,
        wait: WaitFor,
        block: frozenset[str],
        screenshot: Screenshot | None,
        proxy: str | None,
        headers: Mapping[str, str],
        allow_navigation: AllowNavigation | None,
    ) -> Rendered:
        """One try in a fresh context; its cleanup (closing it, freeing the slot) runs after."""
        pooled: PooledBrowser | None = None
        guard: GuardProxy | None = None
        context: BrowserContext | None = None
        requests = Requests(url, block=block, headers=headers, allow_navigation=allow_navigation)
        state = _PageState(requests.refused)
        try:
            pooled = await self.pool.acquire()
            state.died = pooled.died
            guard = await self._guard(proxy).start()
            context = await pooled.browser.new_context(
                proxy={"server": guard.url},
                accept_downloads=False,
                service_workers="block",
                viewport={"width": 1280, "height": 800},
            )
            # Playwright's own timeouts never decide: the caller's deadline does
            context.set_default_timeout(0)
            page = await context.new_page()
            state.watch(context, page)
            await requests.attach(context, page, pooled.user_agent, self._settings.user_agent)
            return await self._load(page, url, wait, screenshot, guard, state)
        except _Crashed:
            raise
        except TimeoutError:
            raise
        except FetchError:
            raise
        except Exception as exc:
            if requests.refused.done():  # the refused navigation is why the step failed
                raise requests.refused.result() from exc
            if pooled is None or guard is None:
                raise FetchError("render_failed", f"no browser: {exc}", final_url=url) from exc
            closed = type(exc).__name__ == "TargetClosedError"  # before "disconnected" fires
            if closed or state.crashed or pooled.dead or not pooled.browser.is_connected():
                raise _Crashed(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
            raise _failure(exc, url, guard) from exc
        finally:
            requests.close()
            task = asyncio.ensure_future(self._cleanup(pooled, context, guard))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _load(
        self,
        page: Page,
        url: str,
        wait: WaitFor,
        screenshot: Screenshot | None,
        guard: GuardProxy,
        state: _PageState,
    ) -> Rendered:
        t0 = time.monotonic()
        until = {"load": "load", "networkidle": "networkidle"}.get(wait.kind, "domcontentloaded")
        if wait.kind == "ms":
            until = "load"
        response = await state.race(page.goto(url, wait_until=until))  # type: ignore[arg-type]
        t1 = time.monotonic()
        scrolled = True
        if wait.kind == "selector":
            selector = wait.selector or ""
            if await self._present(page, selector, state):
                scrolled = False
            else:
                await self._scroll(page, _SCROLL_ONLY, state)  # content shown on scroll
                await state.race(page.wait_for_selector(selector, state="attached"))
        elif wait.kind == "ms" and wait.ms >= 100:  # the delay lets the frames pass
            await self._scroll(page, _SCROLL_ONLY, state)
            await state.race(asyncio.sleep(wait.ms / 1000))
        else:
            await self._scroll(page, _SCROLL, state)
            if wait.kind == "ms":
                await state.race(asyncio.sleep(wait.ms / 1000))
        t2 = time.monotonic()
        html = await state.race(page.content())
        t3 = time.monotonic()
        png = None
        if screenshot is not None:
            if screenshot == "viewport" and scrolled:  # the page as it opens, not its end
                await self._scroll(page, _SCROLL_TOP, state)
            png = await state.race(page.screenshot(type="png", full_page=screenshot == "full_page"))
        t4 = time.monotonic()
        state.check()  # a navigation refused after the last step
        return Rendered(
            url=url,
            final_url=page.url,
            status=response.status if response is not None else 200,
            headers=dict(response.headers) if response is not None else {},
            html=html,
            screenshot_png=png,
            timings={
                "navigate": t1 - t0,
                "wait": t2 - t1,
                "content": t3 - t2,
                "screenshot": t4 - t3,
            },  # fmt: skip
            refused=[f"{r.host}:{r.port} {r.reason}" for r in guard.log.refused],
            dialogs=state.dialogs,
            popups=state.popups,
        )

    @staticmethod
    async def _present(page: Page, selector: str, state: _PageState) -> bool:
        """Whether ``selector`` matches already: then the page is not scrolled at all.

        Scrolling a page to its end makes Chromium lay out and paint what is there, and the
        two frames after it are waited for: on the bench's 4,000 px catalog page that was
        +25-35 CPU ms of ~250 a page and the largest part of the gap to a bare Playwright loop
        (bench/RESULTS.md, Rendering). A caller waiting for a selector has said what it needs;
        when it is there at load, nothing is hidden behind a scroll that it waits for."""
        try:
            return await state.race(page.query_selector(selector)) is not None
        except _Crashed:
            raise
        except Exception:  # the page navigated on: the wait after the scroll settles it
            return False

    @staticmethod
    async def _scroll(page: Page, script: str, state: _PageState) -> None:
        """Scroll to the end (content shown on scroll, lazy loading); a page that navigates
        on meanwhile (a script redirect) or broke scrolling is waited for instead."""
        try:
            await state.race(page.evaluate(script))
        except _Crashed:
            raise
        except Exception:
            await state.race(page.wait_for_load_state("domcontentloaded"))

    async def _cleanup(
        self,
        pooled: PooledBrowser | None,
        context: BrowserContext | None,
        guard: GuardProxy | None,
    ) -> None:
        """Close the page's context and guard, then free its slot."""
        broken = False
        try:
            if context is not None and pooled is not None and not pooled.dead:
                await asyncio.wait_for(context.close(), _CLOSE_S)
        except Exception:
            # a browser that cannot close a context (its renderer stuck): replace it
            broken = pooled is not None and pooled.browser.is_connected()
        finally:
            if guard is not None:
                await guard.close()
            if pooled is not None:
                self.pool.release(pooled, broken=broken)
            self._slots.release()


class _PageState:
    """Crash, dialogs and popups of one page, and ``race`` against its crash."""

    def __init__(self, refused: asyncio.Future[FetchError]) -> None:
        self.crashed = False
        self._refused = refused
        self.dialogs = 0
        self.popups = 0
        self._page: Page | None = None
        loop = asyncio.get_running_loop()
        self._crash: asyncio.Future[str] = loop.create_future()
        self.died: asyncio.Future[str] = loop.create_future()  # the browser's (PooledBrowser)

    def watch(self, context: BrowserContext, page: Page) -> None:
        self._page = page
        page.on("crash", lambda _: self._on_crash("the tab crashed"))
        page.on("dialog", self._on_dialog)
        context.on("page", self._on_popup)

    def _on_crash(self, why: str) -> None:
        self.crashed = True
        if not self._crash.done():
            self._crash.set_result(why)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs += 1
        asyncio.ensure_future(_quietly(dialog.dismiss()))

    def _on_popup(self, popup: Page) -> None:
        if popup is self._page:
            return
        self.popups += 1
        asyncio.ensure_future(_quietly(popup.close()))

    def check(self) -> None:
        """Raise the error of a navigation ``allow_navigation`` refused, if one was."""
        if self._refused.done():
            raise self._refused.result()

    async def race(self, step: Awaitable[T]) -> T:
        """``step``, unless the tab crashes first (then ``_Crashed``)."""
        task = asyncio.ensure_future(step)
        watched: set[asyncio.Future[Any]] = {task, self._crash, self.died, self._refused}
        try:
            done, _ = await asyncio.wait(watched, return_when="FIRST_COMPLETED")
        except BaseException:
            task.cancel()
            task.add_done_callback(_swallow)
            raise
        if self._refused.done():  # before the step's own failure: it is why the step failed
            task.cancel()
            task.add_done_callback(_swallow)
            raise self._refused.result()
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(_swallow)
        self.crashed = True
        raise _Crashed(self._crash.result() if self._crash.done() else self.died.result())


def _headers(operator: Mapping[str, str], caller: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers over the operator's (names compared without case), each checked by
    the rule every request Shoal sends obeys (``ValueError`` naming a bad one)."""
    merged: dict[str, str] = {}
    for source in (operator, caller):
        for name, value in source.items():
            problem = header_problem(name, value)
            if problem is not None:
                raise ValueError(f"header {name!r}: {problem}")
            for known in [k for k in merged if k.lower() == name.lower()]:
                del merged[known]
            merged[name] = value
    return merged


async def _quietly(step: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await step


def _swallow(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _loop_time(monotonic_end: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_end - time.monotonic())


def _failure(exc: Exception, url: str, guard: GuardProxy) -> FetchError:
    """A navigation error as the contract's code: the guard's reason when it refused the
    document (or a redirect hop of it: the navigation fails before any subresource starts, so
    the last refusal is the document's), else ``render_failed``."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if ("ERR_SOCKS" in message or "ERR_PROXY" in message) and guard.log.refused:
        refusal = guard.log.refused[-1]
        where = f"{refusal.host}:{refusal.port}"
        return FetchError(refusal.reason, f"{where}: {refusal.detail}", final_url=url)
    if "Download is starting" in message:
        return FetchError("render_failed", f"{url} is a download, not a page", final_url=url)
    return FetchError("render_failed", message, final_url=url)
