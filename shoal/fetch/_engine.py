"""The fetch engine: one connection pool and one in-flight cap per job per process.

Per-host politeness has two layers: the job's own per-host cap (a semaphore per host, here) and
``SHOAL_MAX_PER_HOST`` across every job and worker, as slots of the host leased from the job
store (``_hostcap.SharedHostCap``, given ``host_leases``): a request waits on a local gate sized
to the slots granted, so it costs no round trip.

The client, measured. httpx was first: its pool rescans every connection per request (a
cProfile of a 1,000-URL chunk at 64 in flight spent 15.2 of 17.5 CPU s in httpcore's
``is_idle``), so its cost grows with concurrency. aiohttp came next and does not degrade, but
its client layers (session, request and response objects, connector, stream reader, timers)
cost more CPU per page than parsing the page. The engine now speaks HTTP/1.1 itself
(``_h1.Transport``: an ``asyncio.Protocol`` per connection, httptools' llhttp parser, keep-alive
pools), keeping everything that makes it robust. ``bench/fetch_engines.py`` (5,000 pages of
44 KB from nginx on 127.0.0.1, 2 cores, fetch + decode, robots.txt and the guard on), pages/s
and CPU ms per page:

    concurrency                16             64             256
    httpx 0.28 (first engine)  567 (1.42)     366 (2.20)     402 (2.28)
    this Engine              9,676 (0.09)   8,991 (0.08)   8,309 (0.12)
    bare aiohttp loop        7,704 (0.13)   5,270 (0.12)   5,828 (0.17)

so 1.26-1.71x a bare aiohttp loop that has none of the robustness below (on the aiohttp
client, the same engine ran 0.69-0.74x of it). Hot-path care: no context-manager generators,
the per-host semaphore skipped when its cap cannot bind, a host checked by the guard once,
robots.txt short-circuited for origins whose robots.txt was 4xx, the usual header block encoded
once, a body that came with its head taken whole.

How it holds up against the web:

- SSRF: direct connections resolve through ``GuardedResolver``, so the address connected to is
  the address checked (no rebinding window); literal IPs are checked here, on every hop.
- Connections: connect (TCP, TLS, a proxy's CONNECT) within ``SHOAL_CONNECT_TIMEOUT_S``, no
  silence longer than ``SHOAL_READ_TIMEOUT_S``, a response head of at most 64 KiB, at most 1 MiB
  read ahead of the body cap; an idle connection the server dropped as it was reused is
  replaced at once (see ``_h1``).
- One clock per URL (``asyncio.timeout``), started when the URL first gets a slot: redirects,
  retries, back-off, slow headers and slow-drip bodies all spend the same ``timeout_s``.
  ``SHOAL_CONNECT_TIMEOUT_S``/``SHOAL_READ_TIMEOUT_S`` end a stuck attempt early so a retry fits.
- Retries with exponential back-off and jitter on connect errors, timeouts, 408, 429 and 5xx;
  ``Retry-After`` honoured up to 30 s, and never past the deadline (then it fails at once).
- Bodies are read under the cap after our own streaming decompression, so a gzip bomb ends
  ``too_large`` having used about the cap in memory.
- Redirects by hand: each hop re-checked (guard, robots.txt), credentials dropped across hosts.
- Proxies: a second transport that only ever dials the operator's proxies (``http`` targets in
  absolute form, ``https`` ones through a CONNECT tunnel, TLS end to end); a failing
  proxy is benched and the next one tried at once; targets are pre-checked by the guard (the
  proxy resolves names itself, so this one check is all we can do).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from shoal.errors import FetchError
from shoal.settings import Settings

from ._connect import Dialer
from ._decode import ascii_as_utf8, decode_body
from ._errors import RETRYABLE_CODES, status_error, to_fetch_error
from ._guard import GuardedResolver
from ._h1 import ProxyError, Response, Transport, header_block
from ._hostcap import HostLeaseBackend, SharedHostCap
from ._inflate import DecodeError, accept_encoding, decoder_for
from ._models import FetchOptions, FetchResponse
from ._policy import AddressPolicy, BlockedAddress, parse_address
from ._proxy import ProxyPool
from ._robots import RobotsCache

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_DEFAULT_ACCEPT_LANGUAGE = "en-US,en;q=0.9"
#: Headers not carried to another host when a redirect leaves the original one.
_CROSS_HOST_DROP = ("authorization", "cookie", "proxy-authorization")
_BACKOFF_BASE_S = 0.2
_BACKOFF_CAP_S = 5.0
_RETRY_AFTER_CAP_S = 30.0
_ROBOTS_TIMEOUT_S = 10.0
_ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB
_DNS_TTL_S = 60
_KEEPALIVE_S = 30.0
_PRECHECK_TTL_S = 60.0
_MAX_HOSTS = 10_000  # bound on per-host book-keeping dicts
_DEFAULT_OPTIONS = FetchOptions()
#: Robots.txt failures that say "the site is unreachable", reported as such rather than as
#: ``robots_disallowed`` (the URL is still refused, as RFC 9309 asks).
_UNREACHABLE = frozenset({"dns", "blocked", "connect", "timeout", "tls", "invalid_url", "proxy"})
#: Set while a rendered page (``browse``, which holds a job slot) has robots.txt fetched for a
#: navigation: those requests run in the page's slot. Waiting for a second one could wait
#: forever: at ``concurrency`` 1, or with every slot held by pages waiting on robots.txt.
_IN_PAGE_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar("_IN_PAGE_SLOT", default=False)


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another one (after a back-off)."""

    def __init__(self, error: FetchError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class _ProxyFailed(Exception):
    """Internal: the proxy (not the site) failed; bench it and try another one at once."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(error.message)
        self.error = error


class _State:
    """Book-keeping of one ``fetch`` across hops and attempts (a plain class: made per URL)."""

    __slots__ = ("url", "timeout_s", "max_body", "clock", "started", "attempts", "hops")

    def __init__(self, url: URL, timeout_s: float, max_body: int) -> None:
        self.url = url  # the hop in progress (the final URL once done)
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.clock: asyncio.Timeout | None = None
        self.started: float | None = None  # loop time of the first slot: the clock starts here
        self.attempts = 1
        self.hops = 0


class _Hop:
    __slots__ = ("status", "location", "headers", "content")

    def __init__(
        self,
        status: int,
        *,
        location: str | None = None,
        headers: CIMultiDict[str] | None = None,
        content: bytes = b"",
    ) -> None:
        self.status = status
        self.location = location
        self.headers: CIMultiDict[str] = CIMultiDict() if headers is None else headers
        self.content = content


class _HostSlots:
    """Per-host semaphores (created on demand, dropped when unused) and per-host pacing.

    Plain ``enter``/``leave`` rather than a context manager: this runs once per request and
    the generator machinery of ``asynccontextmanager`` showed in the profile.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._entries: dict[str, list] = {}  # host -> [Semaphore, users]
        self._next_start: dict[str, float] = {}  # host -> earliest loop time of its next request

    def enter(self, host: str) -> list:
        entry = self._entries.get(host)
        if entry is None:
            entry = self._entries[host] = [asyncio.Semaphore(self.cap), 0]
        entry[1] += 1
        return entry

    def leave(self, host: str, entry: list) -> None:
        entry[1] -= 1
        if entry[1] == 0 and self._entries.get(host) is entry:
            del self._entries[host]

    async def pace(self, host: str, delay: float) -> None:
        """Wait for this request's turn: requests to one host start ``delay`` s apart."""
        now = asyncio.get_running_loop().time()
        if len(self._next_start) > _MAX_HOSTS:
            self._next_start = {h: t for h, t in self._next_start.items() if t > now}
        start = max(now, self._next_start.get(host, 0.0))
        self._next_start[host] = start + delay
        if start > now:
            await asyncio.sleep(start - now)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _validate(url: str) -> URL:
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise FetchError("invalid_url", f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise FetchError("invalid_url", f"not an http(s) URL: {url[:200]!r}")
    if not parsed.host:
        raise FetchError("invalid_url", f"URL has no host: {url[:200]!r}")
    return parsed


def _too_large(state: _State, status: int) -> FetchError:
    return FetchError("too_large", f"body larger than {state.max_body} bytes", http_status=status)


def _media_type(header: str | None) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    return header.split(";", 1)[0].strip().lower() if header else ""


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


class Engine:
    """Fetches URLs for one job over one pool of connections (``_h1.Transport``).

    ``concurrency`` is a true cap on requests in flight across every caller of this engine;
    requests to one host are further capped at ``min(settings.max_per_host, max_per_host)`` and,
    with ``host_delay_s`` (or a robots.txt ``Crawl-delay``, bounded by
    ``settings.max_crawl_delay_s``), start at least that far apart. Given ``host_leases`` (the job
    store's ``HostLeases``), a request also waits for a slot of its host that this engine holds
    a lease on, so ``settings.max_per_host`` holds across every engine sharing the store (see
    ``_hostcap``; ``settings.host_lease_s`` 0 turns it off). A URL's ``timeout_s`` is one
    budget for all its redirects, retries and back-off, counted from the moment it first gets a
    slot (time queued behind the caps does not count).

    ``proxies`` maps a ``proxy_type`` to proxy URLs (default: ``settings.proxy_pools()``).
    ``resolver`` replaces the system resolver for direct connections (tests); the SSRF guard
    checks whatever it answers. ``ssl_context`` replaces the default verifying TLS context
    (tests trust their own CA with it).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        settings: Settings,
        max_per_host: int | None = None,
        host_delay_s: float = 0.0,
        delay_scale: int = 1,
        proxies: Mapping[str, list[str]] | None = None,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        host_leases: HostLeaseBackend | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._settings = settings
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        host_cap = min(settings.max_per_host, max_per_host or math.inf, concurrency)
        self._hosts = _HostSlots(int(host_cap))
        self._host_cap_binds = host_cap < concurrency
        self._shared: SharedHostCap | None = None
        if host_leases is not None and settings.host_lease_s > 0:
            self._shared = SharedHostCap(
                host_leases,
                cap=settings.max_per_host,
                local_cap=int(host_cap),
                lease_s=settings.host_lease_s,
            )
        # several processes sharing one job each space their requests ``delay_scale`` times
        # further apart, so the job keeps the host delay / Crawl-delay as a whole
        self._delay_scale = max(1, delay_scale)
        self._host_delay_s = max(0.0, host_delay_s) * self._delay_scale
        self._policy = AddressPolicy.from_settings(settings)
        pools = settings.proxy_pools() if proxies is None else proxies
        self._pools = {name: ProxyPool(list(urls)) for name, urls in pools.items() if urls}
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._direct: Transport | None = None
        self._proxied: Transport | None = None
        self._robots: dict[str, RobotsCache] = {}
        self._robots_failures: dict[tuple[str, tuple[str, str, int | None]], FetchError] = {}
        self._robots_open: set[tuple[str, tuple[str, str, int | None]]] = set()
        self._prechecked: dict[str, float] = {}  # proxied target host -> checked until
        self._direct_ok: set[str] = set()  # hosts whose direct-connection check passed
        self._crawl_delays: dict[tuple[str, tuple[str, str, int | None]], tuple[float, float]] = {}
        self._in_flight = 0
        self._peak = 0
        self._default_headers = CIMultiDict(
            {
                "User-Agent": settings.user_agent,
                "Accept": _DEFAULT_ACCEPT,
                "Accept-Language": _DEFAULT_ACCEPT_LANGUAGE,
                **settings.default_headers,  # the operator's own, over ours
            }
        )
        self._accept_encoding = accept_encoding()
        self._base_headers = self._default_headers.copy()
        self._base_headers["Accept-Encoding"] = self._accept_encoding
        self._base_block = header_block(self._base_headers)  # sent as is by most requests

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
        for transport in (self._direct, self._proxied):
            if transport is not None:
                await transport.aclose()
        self._direct = self._proxied = None
        if self._resolver is not None:
            await self._resolver.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def in_flight(self) -> int:
        """Requests holding a slot right now."""
        return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests that were ever in flight at once."""
        return self._peak

    @property
    def host_slots(self) -> SharedHostCap | None:
        """The host slots leased from the job store (None without ``host_leases``)."""
        return self._shared

    # ------------------------------------------------------------------ public
    async def fetch(self, url: str, options: FetchOptions | None = None) -> FetchResponse:
        """Fetch one URL (GET), following redirects; raises ``FetchError`` on failure."""
        options = options or _DEFAULT_OPTIONS
        state = _State(
            url=_validate(url),
            timeout_s=float(options.timeout_s),
            max_body=min(options.max_body_bytes, self._settings.max_body_bytes),
        )
        pool = None
        if options.proxy_type != "none":
            pool = self._pools.get(options.proxy_type)
            if pool is None:
                raise FetchError("proxy", f"proxy pool {options.proxy_type!r} is not configured")
        try:
            # The whole URL under one clock; it starts ticking when the URL first gets a slot.
            async with asyncio.timeout(None) as state.clock:
                hop = await self._follow(state, options, pool)
        except TimeoutError as exc:
            err = FetchError("timeout", f"no complete response within {state.timeout_s:g} s")
            err.attempts, err.final_url = state.attempts, str(state.url)
            raise err from exc
        except FetchError as err:
            if err.attempts <= 1:  # robots.txt failures carry the attempts of that fetch
                err.attempts = state.attempts
            if err.final_url is None:
                err.final_url = str(state.url)
            raise
        content_type = hop.headers.get("content-type")
        text: str | None
        if ascii_as_utf8(hop.content, content_type):
            text, encoding = None, "utf-8"  # decoded on first use, if ever
        else:
            text, encoding = decode_body(hop.content, content_type)
        now = asyncio.get_running_loop().time()
        return FetchResponse(
            url=url,
            final_url=str(state.url) if state.hops else url,
            status=hop.status,
            # a CIMultiDict since issue 12 (repeated fields apart); _models still says dict
            headers=hop.headers,  # repeated fields (Set-Cookie) stay apart
            content=hop.content,
            text=text,
            content_type=_media_type(content_type),
            elapsed_ms=int((now - (state.started or now)) * 1000),
            attempts=state.attempts,
            encoding=encoding,
        )

    @contextlib.asynccontextmanager
    async def browse(
        self, url: str, options: FetchOptions | None = None
    ) -> AsyncIterator[str | None]:
        """Admit a URL a browser will load (``shoal.render``), holding its slots meanwhile;
        yields the proxy of the job's pool to load it through (None: direct).

        What ``fetch`` does before it sends a request, without sending one, so a rendered URL
        meets the same rules as a plain one: the URL checked (``invalid_url``), the guard's
        check of its host, robots.txt (``robots_disallowed``) and the host's delay, then a slot
        of the host (the job's per-host cap, ``SHOAL_MAX_PER_HOST`` across jobs) and one of the
        job's ``concurrency``. The proxy is the pool's pick, benched when the body raises a
        ``proxy`` error. The navigations the browser then makes (redirect hops, script
        redirects) are asked of robots.txt by ``navigation_check``; every address the browser
        connects to meets the renderer's guard."""
        options = options or _DEFAULT_OPTIONS
        parsed = _validate(url)
        pool = None
        if options.proxy_type != "none":
            pool = self._pools.get(options.proxy_type)
            if pool is None:
                raise FetchError("proxy", f"proxy pool {options.proxy_type!r} is not configured")
        if pool is not None or parsed.host not in self._direct_ok:
            await self._check_target(parsed, proxied=pool is not None)
        delay = self._host_delay_s
        if options.respect_robots:
            delay = max(delay, await self._robots_check(parsed, options.proxy_type))
        proxy = None
        if pool is not None:
            proxy = pool.pick()
            if proxy is None:
                raise FetchError("proxy", "no healthy proxy left in the pool")
        host = parsed.host or ""
        async with contextlib.AsyncExitStack() as held:
            # the order of _in_host_slot: a page waiting for its host holds no job slot
            if self._host_cap_binds or delay > 0:
                entry = self._hosts.enter(host)
                held.callback(self._hosts.leave, host, entry)
                await held.enter_async_context(entry[0])
                if delay > 0:
                    await self._hosts.pace(host, delay)
            shared = self._shared
            if shared is not None:
                gate = shared.gates.get(host) or shared.gate(host)
                if gate.in_use < gate.limit and not gate.waiters:
                    gate.in_use += 1
                    gate.peak = max(gate.peak, gate.in_use)
                else:
                    await shared.wait(host, gate)
                held.callback(shared.leave, host, gate)
            await held.enter_async_context(self._slots)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            held.callback(self._left)
            try:
                yield proxy
            except FetchError as err:
                if pool is not None and proxy is not None:
                    (pool.failed if err.code == "proxy" else pool.succeeded)(proxy)
                raise
            if pool is not None and proxy is not None:
                pool.succeeded(proxy)

    def _left(self) -> None:
        self._in_flight -= 1

    def navigation_check(
        self, options: FetchOptions | None = None
    ) -> Callable[[str], Awaitable[FetchError | None]] | None:
        """What a page ``browse`` admitted asks before its main frame goes to another URL
        (``Renderer.render``'s ``allow_navigation``): None when robots.txt is not respected.

        The check answers None (go on) or the ``FetchError`` a fetch's redirect hop to that
        URL would have met: ``robots_disallowed`` naming the URL, or the robots.txt failure that
        refused it (``_UNREACHABLE``). Same robots.txt cache, product token and proxy pool as
        ``fetch``; a robots.txt it has to fetch is fetched within the page's job slot (the
        page holds one: ``_IN_PAGE_SLOT``) and its host's slots. The host's crawl delay is
        not waited for: the browser is already on its way. URLs that are not http(s) are no
        business of robots.txt (None)."""
        options = options or _DEFAULT_OPTIONS
        if not options.respect_robots:
            return None
        proxy_type = options.proxy_type

        async def check(url: str) -> FetchError | None:
            try:
                parsed = _validate(url)
            except FetchError:
                return None
            held = _IN_PAGE_SLOT.set(True)  # robots.txt's fetch task copies it
            try:
                await self._robots_check(parsed, proxy_type)
            except FetchError as err:
                if err.code == "robots_disallowed":
                    err.message = f"robots.txt of {parsed.host} disallows {url}"
                err.final_url = url
                return err
            finally:
                _IN_PAGE_SLOT.reset(held)
            return None

        return check

    # ------------------------------------------------------------------ hops
    async def _follow(self, state: _State, options: FetchOptions, pool: ProxyPool | None) -> _Hop:
        headers = self._headers(options.headers)
        block = self._block(headers)
        while True:
            current = state.url
            if pool is not None or current.host not in self._direct_ok:
                await self._check_target(current, proxied=pool is not None)
            delay = self._host_delay_s
            if options.respect_robots:
                delay = max(delay, await self._robots_check(current, options.proxy_type))
            hop = await self._request(state, block, pool, delay)
            if hop.location is None:
                return hop
            state.hops += 1
            if state.hops > self._settings.max_redirects:
                raise FetchError(
                    "too_many_redirects",
                    f"more than {self._settings.max_redirects} redirects",
                    http_status=hop.status,
                )
            try:
                nxt = current.join(URL(hop.location))
            except (TypeError, ValueError) as exc:
                raise FetchError(
                    "invalid_url", f"bad redirect location {hop.location[:200]!r}"
                ) from exc
            if nxt.scheme not in ("http", "https") or not nxt.host:
                raise FetchError(
                    "invalid_url", f"redirect to a non-http(s) URL {hop.location[:200]!r}"
                )
            if nxt.host != current.host:
                headers = headers.copy()
                for name in _CROSS_HOST_DROP:
                    headers.popall(name, None)
                block = self._block(headers)
            state.url = nxt.with_fragment(None)

    def _headers(self, extra: Mapping[str, str]) -> CIMultiDict[str]:
        if not extra:
            return self._base_headers  # never mutated: a redirect copies before dropping
        headers = self._default_headers.copy()
        for name, value in extra.items():
            headers[name] = value
        # Only codings this engine can decode (and count against the body cap).
        headers["Accept-Encoding"] = self._accept_encoding
        return headers

    def _block(self, headers: CIMultiDict[str]) -> bytes:
        if headers is self._base_headers:
            return self._base_block
        try:
            return header_block(headers)
        except ValueError as exc:  # the API refuses these; the operator's own could slip in
            raise FetchError("invalid_url", f"invalid request header: {exc}") from exc

    async def _check_target(self, url: URL, *, proxied: bool) -> None:
        """Literal IPs are checked here (the transport never resolves them); names, in the
        resolver.

        Through a proxy the proxy resolves the name, so we can only check our own answer first.
        """
        host = url.host or ""
        try:
            literal = self._policy.check_literal(host)
            if not proxied:
                if len(self._direct_ok) > _MAX_HOSTS:
                    self._direct_ok.clear()
                self._direct_ok.add(host)  # the policy never changes: check a host once
                return
            if literal or self._policy.allow_private or self._policy.host_allowed(host):
                return
            now = asyncio.get_running_loop().time()
            if self._prechecked.get(host, 0.0) > now:
                return
            try:
                results = await self._inner_resolver().resolve(host, 0, socket.AF_UNSPEC)
            except OSError:
                return  # the proxy may resolve what we cannot; nothing to check
            self._policy.check(host, (parse_address(r["host"]) for r in results))
            if len(self._prechecked) > _MAX_HOSTS:
                self._prechecked.clear()
            self._prechecked[host] = now + _PRECHECK_TTL_S
        except BlockedAddress as exc:
            raise FetchError("blocked", str(exc), final_url=str(url)) from exc

    # ------------------------------------------------------------------ robots.txt
    async def _robots_check(self, url: URL, proxy_type: str) -> float:
        """Raise unless robots.txt allows ``url``; the host's crawl delay (bounded) otherwise."""
        key = (proxy_type, _origin(url))
        if key in self._robots_open:
            return 0.0  # robots.txt was 4xx: everything allowed, for good (RFC 9309 2.3.1.3)
        cache = self._robots.get(proxy_type)
        if cache is None:
            cache = self._robots[proxy_type] = RobotsCache(
                self._settings.user_agent, self._robots_fetcher(proxy_type)
            )
        target = str(url)
        if not await cache.allowed(target):
            failure = self._robots_failures.get(key)
            if failure is not None and failure.code in _UNREACHABLE:
                raise FetchError(
                    failure.code,
                    f"robots.txt unreachable: {failure.message}",
                    attempts=failure.attempts,
                )
            raise FetchError("robots_disallowed", f"robots.txt of {url.host} disallows this URL")
        # Crawl-delay is per origin: ask the parser once a minute, not once a request.
        now = asyncio.get_running_loop().time()
        known = self._crawl_delays.get(key)
        if known is None or known[0] < now:
            found = cache.crawl_delay(target)
            delay = (
                min(found, self._settings.max_crawl_delay_s) * self._delay_scale if found else 0.0
            )
            if len(self._crawl_delays) > _MAX_HOSTS:
                self._crawl_delays.clear()
            known = self._crawl_delays[key] = (now + _PRECHECK_TTL_S, delay)
        return known[1]

    def _robots_fetcher(self, proxy_type: str) -> Callable[[str], Awaitable[tuple[int, str]]]:
        async def fetch_text(robots_url: str) -> tuple[int, str]:
            options = FetchOptions(
                timeout_s=_ROBOTS_TIMEOUT_S,
                max_body_bytes=_ROBOTS_MAX_BYTES,
                proxy_type=proxy_type,
                respect_robots=False,
            )
            key = (proxy_type, _origin(URL(robots_url)))
            try:
                resp = await self.fetch(robots_url, options)
            except FetchError as err:
                status = err.http_status
                if err.code == "too_many_redirects":
                    status = 404  # RFC 9309 2.3.1.2: may be treated as unavailable
                if status is not None and err.code in ("http_4xx", "too_many_redirects"):
                    if status != 429 and len(self._robots_open) < _MAX_HOSTS:
                        self._robots_open.add(key)
                    return status, ""
                if status is not None and err.code == "http_5xx":
                    return status, ""
                self._robots_failures[key] = err
                raise
            self._robots_failures.pop(key, None)
            return resp.status, resp.text

        return fetch_text

    # ------------------------------------------------------------------ attempts
    async def _request(
        self, state: _State, headers: bytes, pool: ProxyPool | None, delay: float
    ) -> _Hop:
        """One hop: attempts (each holding a host slot and a job slot) with retries."""
        url = state.url
        host = url.host or ""
        retries = 0
        proxy_failures = 0
        while True:
            proxy: str | None = None
            if pool is not None:
                proxy = pool.pick()
                if proxy is None:
                    raise FetchError("proxy", "no healthy proxy left in the pool")
            try:
                if self._host_cap_binds or delay > 0:
                    hop = await self._in_host_slot(host, delay, url, headers, state, proxy)
                elif self._shared is not None:
                    hop = await self._in_shared_slot(host, url, headers, state, proxy)
                elif _IN_PAGE_SLOT.get():
                    hop = await self._send(url, headers, state, proxy)
                else:  # a host cap >= the job's cap can never bind: skip its book-keeping
                    async with self._slots:
                        self._in_flight += 1
                        if self._in_flight > self._peak:
                            self._peak = self._in_flight
                        try:
                            hop = await self._send(url, headers, state, proxy)
                        finally:
                            self._in_flight -= 1
            except _ProxyFailed as failed:
                assert pool is not None and proxy is not None
                pool.failed(proxy)
                proxy_failures += 1
                if proxy_failures >= len(pool):
                    raise failed.error from failed.__cause__
                state.attempts += 1
                continue
            except _Retry as r:
                if pool is not None and proxy is not None:
                    pool.succeeded(proxy)  # the proxy answered; the site failed
                if retries >= self._settings.fetch_retries:
                    raise r.error from r.__cause__
                pause = min(_BACKOFF_BASE_S * 2**retries, _BACKOFF_CAP_S)
                pause *= random.uniform(0.5, 1.5)
                if r.retry_after is not None:
                    pause = max(pause, min(r.retry_after, _RETRY_AFTER_CAP_S))
                when = state.clock.when() if state.clock is not None else None
                if when is not None and asyncio.get_running_loop().time() + pause >= when:
                    raise r.error from r.__cause__  # no time left to wait: fail now, truthfully
                await asyncio.sleep(pause)
                retries += 1
                state.attempts += 1
                continue
            if pool is not None and proxy is not None:
                pool.succeeded(proxy)
            return hop

    async def _in_host_slot(
        self,
        host: str,
        delay: float,
        url: URL,
        headers: bytes,
        state: _State,
        proxy: str | None,
    ) -> _Hop:
        # Host slot first: a request waiting for its host must not hold a job slot.
        entry = self._hosts.enter(host)
        try:
            async with entry[0]:
                if delay > 0:
                    await self._hosts.pace(host, delay)
                if self._shared is not None:
                    return await self._in_shared_slot(host, url, headers, state, proxy)
                return await self._in_job_slot(url, headers, state, proxy)
        finally:
            self._hosts.leave(host, entry)

    async def _in_shared_slot(
        self, host: str, url: URL, headers: bytes, state: _State, proxy: str | None
    ) -> _Hop:
        # A slot of the host leased from the job store (all jobs and workers), before a job
        # slot; inline, the usual case: a free slot and nobody queued before us.
        shared = self._shared
        assert shared is not None
        gate = shared.gates.get(host) or shared.gate(host)
        if gate.in_use < gate.limit and not gate.waiters:
            gate.in_use += 1
            if gate.in_use > gate.peak:
                gate.peak = gate.in_use
        else:
            await shared.wait(host, gate)
        try:
            return await self._in_job_slot(url, headers, state, proxy)
        finally:
            shared.leave(host, gate)

    async def _in_job_slot(
        self, url: URL, headers: bytes, state: _State, proxy: str | None
    ) -> _Hop:
        if _IN_PAGE_SLOT.get():
            return await self._send(url, headers, state, proxy)
        async with self._slots:
            self._in_flight += 1
            if self._in_flight > self._peak:
                self._peak = self._in_flight
            try:
                return await self._send(url, headers, state, proxy)
            finally:
                self._in_flight -= 1

    async def _send(self, url: URL, headers: bytes, state: _State, proxy: str | None) -> _Hop:
        """One attempt, holding the slots: send, then read the body under the cap."""
        if state.started is None:
            state.started = asyncio.get_running_loop().time()
            if state.clock is not None:
                state.clock.reschedule(state.started + state.timeout_s)
        if proxy is None:
            transport = self._direct or self._transport(proxied=False)
        else:
            transport = self._proxied or self._transport(proxied=True)
        try:
            response = await transport.request(
                url, headers, proxy=None if proxy is None else URL(proxy)
            )
            try:
                status = response.status
                if proxy is not None and status == 407:
                    raise _ProxyFailed(
                        FetchError("proxy", "the proxy refused us (407)", http_status=407)
                    )
                if status >= 300:
                    location = response.headers.get("location")
                    if location and status in _REDIRECT_STATUSES:
                        return _Hop(status, location=location)
                    if status in (408, 429) or status >= 500:
                        err = status_error(status, url=str(url))
                        raise _Retry(err, _retry_after(response.headers.get("retry-after")))
                    if status >= 400:
                        raise status_error(status, url=str(url))
                content = await self._read_body(response, state)
                return _Hop(status, headers=response.headers, content=content)
            finally:
                response.release()  # pooled again only when read to its end
        except BlockedAddress as exc:  # from the guarded resolver, at connect time
            raise FetchError("blocked", str(exc)) from exc
        except DecodeError as exc:
            raise FetchError("connect", f"could not decode the response body: {exc}") from exc
        except OSError as exc:  # TimeoutError, ssl.SSLError and the transport's errors too
            err = to_fetch_error(exc, url=str(url), timeout_s=self._settings.read_timeout_s)
            if proxy is not None and isinstance(exc, ProxyError):
                raise _ProxyFailed(FetchError("proxy", err.message)) from exc
            if err.code in RETRYABLE_CODES:
                raise _Retry(err) from exc
            raise err from exc

    @staticmethod
    async def _read_body(response: Response, state: _State) -> bytes:
        """The body, decompressed, refusing (``too_large``) past ``state.max_body`` bytes."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > state.max_body:
            raise _too_large(state, response.status)
        codings = response.headers.getall("content-encoding", None)  # each field a coding too
        decoder = decoder_for(", ".join(codings)) if codings else None
        if decoder is None and response.complete:  # the usual page: it came with its head
            body = response.body()
            if len(body) > state.max_body:
                raise _too_large(state, response.status)
            return body
        chunks: list[bytes] = []
        size = 0
        while pieces := await response.read_some():
            for data in pieces:
                for piece in decoder.feed(data) if decoder is not None else (data,):
                    size += len(piece)
                    if size > state.max_body:
                        raise _too_large(state, response.status)
                    chunks.append(piece)
        if decoder is not None:
            for piece in decoder.flush():
                size += len(piece)
                if size > state.max_body:
                    raise _too_large(state, response.status)
                chunks.append(piece)
        return b"".join(chunks)

    # ------------------------------------------------------------------ transports
    def _inner_resolver(self) -> AbstractResolver:
        if self._resolver is None:
            self._resolver = aiohttp.ThreadedResolver()
        return self._resolver

    def _transport(self, *, proxied: bool) -> Transport:
        """The direct transport (guarded resolver) or the proxy one, made on first use.

        The proxy transport only ever dials the operator's proxies, so it resolves them without
        the guard (a proxy on a private address is the operator's choice); targets reached
        through it are checked by ``_check_target``, and the targets of ``socks5://`` and
        ``socks4://`` proxies, which Shoal resolves itself, by the engine's guarded resolver,
        so the operator's policy (private networks, allow-list) applies to them as to a direct
        fetch.
        """
        if proxied:
            if self._proxied is None:
                self._proxied = self._new_transport(
                    aiohttp.ThreadedResolver(),
                    targets=GuardedResolver(self._inner_resolver(), self._policy),
                )
            return self._proxied
        if self._direct is None:
            self._direct = self._new_transport(
                GuardedResolver(self._inner_resolver(), self._policy)
            )
        return self._direct

    def _new_transport(
        self, resolver: AbstractResolver, targets: AbstractResolver | None = None
    ) -> Transport:
        dialer = Dialer(
            resolver=resolver,
            connect_timeout_s=self._settings.connect_timeout_s,
            dns_ttl_s=_DNS_TTL_S,
            ssl_context=self._ssl_context,
            target_resolver=targets,
        )
        return Transport(
            resolver=resolver,
            connect_timeout_s=self._settings.connect_timeout_s,
            read_timeout_s=self._settings.read_timeout_s,
            max_idle=self._concurrency,
            keepalive_s=_KEEPALIVE_S,
            dns_ttl_s=_DNS_TTL_S,
            ssl_context=self._ssl_context,
            dialer=dialer,
        )
