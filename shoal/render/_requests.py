"""What a page's requests carry, and where its main frame may go: one DevTools session a page.

Chromium's own request interception (DevTools ``Fetch``) with patterns, so that only the
requests this needs to see pause. Playwright's ``route`` pauses every request for a round trip
through this process to read its type: measured on a page of 61 requests, 688-705 CPU ms and
545-591 ms a page with a route against 484-518 CPU ms and 344-386 ms without (what the patterns
add: ``Requests.attach``). Playwright's ``set_extra_http_headers`` is no substitute for the
header rule below: it sends the headers with every request, to every site.

- ``block_resources``: a pattern per blocked type; those requests fail at once. Cross-site
  iframes (other targets) keep their images: blocking saves bytes, it guards nothing (the
  SOCKS guard does).
- **Navigations** (documents): when the caller checks navigations (``allow_navigation``, the
  engine's robots.txt) or sent headers, every document request pauses: each request of the
  main frame after the first (an HTTP redirect hop, a script redirect, a meta refresh, a form)
  is asked of ``allow_navigation`` first, and a refused one fails and ends the render with the
  callback's error (``robots_disallowed`` naming the URL). Frames' own documents are not asked
  (as subresources are not: browsers and Google's renderer read robots.txt for the page they
  were sent to, not for what it embeds).
- **Headers** (the job's ``headers`` over the operator's ``SHOAL_DEFAULT_HEADERS``): added to
  main-frame documents on the URL's host (its redirect hops and later navigations too, any
  scheme or port: the fetch engine keeps credentials within a host the same way), and to
  frame documents, ``fetch()`` and XHR on the URL's origin (XHR and fetch pause only there: a
  URL pattern of the origin). Never to another host or origin: a caller's ``Authorization`` or
  ``Cookie`` does not leak to another site, nor to the page's scripts, styles or images (those
  do not pause at all).
- **User-Agent**: the browser's own with ``HeadlessChrome/`` read as ``Chrome/`` and
  `` (compatible; <SHOAL_USER_AGENT>)`` appended, as Google's rendering crawler identifies
  itself (Chrome's string, plus its bot token: robots.txt is read for that token); client
  hints (``Sec-CH-UA``, ``navigator.userAgentData``) name Chromium without ``HeadlessChrome``.
  A ``User-Agent`` in the headers replaces it whole (then no client hints: their brands could
  contradict it). Unlike the other headers it goes with every request: it is the browser's
  identity, and ``navigator.userAgent`` says the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shoal.errors import FetchError

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, CDPSession, Page

#: the caller's check of a main-frame navigation: None to go on, or the error that refuses it
AllowNavigation = Callable[[str], Awaitable[FetchError | None]]
#: Playwright's resource types (the contract's names) as the DevTools protocol spells them
CDP_TYPES = {
    "document": "Document", "stylesheet": "Stylesheet", "image": "Image", "media": "Media",
    "font": "Font", "script": "Script", "texttrack": "TextTrack", "xhr": "XHR", "fetch": "Fetch",
    "eventsource": "EventSource", "websocket": "WebSocket", "manifest": "Manifest",
    "other": "Other",
}  # fmt: skip
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAJOR = re.compile(r"Chrome/(\d+)")


def bot_user_agent(chromium: str, bot: str) -> str:
    """Chromium's User-Agent as Google's renderer shapes it: ``HeadlessChrome/`` read as
    ``Chrome/``, then `` (compatible; <bot>)``.

    ``Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)
    Chrome/156.0.8078.114 Safari/537.36 (compatible; ShoalBot/0.1 (+https://github.com/shoal))``
    """
    return f"{chromium.replace('HeadlessChrome/', 'Chrome/')} (compatible; {bot})"


def _client_hints(user_agent: str) -> dict[str, Any] | None:
    """``userAgentMetadata`` for ``user_agent`` (brands: Chromium and a GREASE brand, as a
    Chromium build that is not headless sends), None if it names no Chrome version."""
    found = _MAJOR.search(user_agent)
    if found is None:
        return None
    major = found.group(1)
    brands = [{"brand": "Chromium", "version": major}, {"brand": "Not=A?Brand", "version": "99"}]
    return {
        "brands": brands,
        "platform": "Linux" if "Linux" in user_agent else "",
        "platformVersion": "",
        "architecture": "",
        "model": "",
        "mobile": False,
    }


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return (scheme, (parts.hostname or "").lower(), port)


def _origin_pattern(url: str) -> str | None:
    """A DevTools URL pattern of ``url``'s origin as Chromium writes URLs (default port left
    out), or None if it cannot be written without a wildcard of its own."""
    scheme, host, port = _origin(url)
    if not host or any(c in host for c in "*?\\"):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}/*"


class Requests:
    """The interception of one page (see the module docstring); ``refused`` completes with
    the error of a refused navigation."""

    def __init__(
        self,
        url: str,
        *,
        block: frozenset[str],
        headers: Mapping[str, str],
        allow_navigation: AllowNavigation | None,
    ) -> None:
        self._url = url
        self._origin = _origin(url)
        self._host = self._origin[1]
        self._fail = frozenset(CDP_TYPES[t] for t in block)
        self._headers = {k: v for k, v in headers.items() if k.lower() != "user-agent"}
        self._user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
        self._allow = allow_navigation
        self._main_frame: str | None = None
        self._first = True
        self._session: CDPSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.refused: asyncio.Future[FetchError] = asyncio.get_running_loop().create_future()

    async def attach(self, context: BrowserContext, page: Page, chromium_ua: str, bot: str) -> None:
        """Set the page's User-Agent and start intercepting, before its first navigation.

        What it costs: a document request pauses for one round trip through this process, an
        XHR/fetch to the origin too when there are headers; nothing else pauses. The route
        measurement above (61 pauses, ~190 CPU ms) puts a pause at ~3 CPU ms; a page that is
        not redirected pauses once. ``bench/render_requests.py`` (catalog pages of ~20 KB,
        C=4, CPU ms per page of the process tree, medians; this 2-core machine at load 15-19):

            pages x rounds   base (before)   ua   + navigation check   + headers
            40 x 3           266             280  298                  302
            80 x 4           288             280  281                  276

        so the cost is below what this machine can resolve (one variant's rounds spread
        30-45 ms): the User-Agent override is one DevTools call a page, and the check one
        pause a page."""
        session = self._session = await context.new_cdp_session(page)
        override: dict[str, Any]
        if self._user_agent is not None:
            override = {"userAgent": self._user_agent}
        else:
            ua = bot_user_agent(chromium_ua, bot)
            override = {"userAgent": ua}
            hints = _client_hints(ua)
            if hints is not None:
                override["userAgentMetadata"] = hints
        await session.send("Emulation.setUserAgentOverride", override)
        patterns = [{"urlPattern": "*", "resourceType": t} for t in sorted(self._fail)]
        navigations = self._allow is not None or bool(self._headers)
        if navigations and "Document" not in self._fail:
            tree = await session.send("Page.getFrameTree")
            self._main_frame = tree["frameTree"]["frame"]["id"]
            patterns.append({"urlPattern": "*", "resourceType": "Document"})
        origin = _origin_pattern(self._url)
        if self._headers and origin is not None:
            for kind in ("XHR", "Fetch"):
                if kind not in self._fail:
                    patterns.append({"urlPattern": origin, "resourceType": kind})
        if patterns:
            session.on("Fetch.requestPaused", self._paused)
            await session.send("Fetch.enable", {"patterns": patterns})

    def close(self) -> None:
        """Stop deciding: a navigation check still waiting (robots.txt) is cancelled."""
        for task in self._pending:
            task.cancel()

    # ------------------------------------------------------------------ one request
    def _paused(self, event: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._decide(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _decide(self, event: dict[str, Any]) -> None:
        assert self._session is not None
        rid = event["requestId"]
        kind = event.get("resourceType")
        url = event["request"]["url"]
        if kind in self._fail:
            return await self._send("Fetch.failRequest", rid, errorReason="BlockedByClient")
        add: Mapping[str, str] = {}
        if kind == "Document" and event.get("frameId") == self._main_frame:
            first, self._first = self._first, False
            if self._allow is not None and not (first and url == self._url):
                try:
                    refusal = await self._allow(url)
                except Exception as exc:  # a broken check refuses: it must not let pages by
                    refusal = FetchError("render_failed", f"checking {url}: {exc!r}")
                if refusal is not None:
                    if refusal.final_url is None:
                        refusal.final_url = url
                    if not self.refused.done():
                        self.refused.set_result(refusal)
                    return await self._send("Fetch.failRequest", rid, errorReason="BlockedByClient")
            if _origin(url)[1] == self._host:  # another host: none (the module docstring)
                add = self._headers
        elif _origin(url) == self._origin:
            add = self._headers
        if not add:
            return await self._send("Fetch.continueRequest", rid)
        ours = {name.lower() for name in add}
        merged = {k: v for k, v in event["request"]["headers"].items() if k.lower() not in ours}
        merged.update(add)
        headers = [{"name": k, "value": v} for k, v in merged.items()]
        await self._send("Fetch.continueRequest", rid, headers=headers)

    async def _send(self, method: str, rid: str, **params: Any) -> None:
        assert self._session is not None
        with contextlib.suppress(Exception):  # the page or its context closed meanwhile
            await self._session.send(method, {"requestId": rid, **params})
