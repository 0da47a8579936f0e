"""The fetch engine: one httpx client and one in-flight cap per job per process."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType

import httpx

from shoal.errors import FetchError
from shoal.settings import Settings

from ._decode import content_type_of, decode_body
from ._errors import RETRYABLE_CODES, status_error, to_fetch_error
from ._guard import HostGuard
from ._models import FetchOptions, FetchResponse

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
#: Headers not carried to another host when a redirect leaves the original one.
_CROSS_HOST_DROP = ("authorization", "cookie", "proxy-authorization")
_BACKOFF_BASE_S = 0.2
_BACKOFF_CAP_S = 5.0
_RETRY_AFTER_CAP_S = 30.0


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another one."""

    def __init__(self, error: FetchError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


@dataclass
class _State:
    """Book-keeping of one ``fetch`` across hops and attempts."""

    timeout_s: float
    max_body: int
    deadline: float | None = None  # loop time; set when the URL first gets a slot
    started: float | None = None
    attempts: int = 1


@dataclass
class _Hop:
    status: int
    location: str | None = None
    headers: dict[str, str] | None = None
    content: bytes = b""


class _HostSlots:
    """Per-host semaphores, created on demand and dropped when nobody uses them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._entries: dict[str, list] = {}  # host -> [Semaphore, users]

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        entry = self._entries.get(host)
        if entry is None:
            entry = self._entries[host] = [asyncio.Semaphore(self.cap), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._entries.get(host) is entry:
                del self._entries[host]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = datetime.now(when.tzinfo or UTC)
    return max(0.0, (when - now).total_seconds())


def _validate(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError("invalid_url", f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise FetchError("invalid_url", f"not an http(s) URL: {url[:200]!r}")
    if not parsed.host:
        raise FetchError("invalid_url", f"URL has no host: {url[:200]!r}")
    return parsed


class Engine:
    """Fetches URLs for one job with one shared ``httpx.AsyncClient``.

    ``concurrency`` is a true cap on requests in flight across every caller of this engine;
    requests to one host are further capped at ``min(settings.max_per_host, max_per_host)``.
    A URL's ``timeout_s`` is one budget for all its redirects, retries and backoff, counted from
    the moment it first gets a slot (time queued behind the cap does not count).
    """

    def __init__(
        self, *, concurrency: int, settings: Settings, max_per_host: int | None = None
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._settings = settings
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        host_cap = min(settings.max_per_host, max_per_host or math.inf)
        self._hosts = _HostSlots(int(min(host_cap, concurrency)))
        self._guard = HostGuard(allow_private_networks=settings.allow_private_networks)
        self._in_flight = 0
        self._peak = 0
        self._default_headers = httpx.Headers(
            {
                "User-Agent": settings.user_agent,
                "Accept": _DEFAULT_ACCEPT,
                "Accept-Encoding": "gzip, deflate",
            }
        )
        # One job fetches many unrelated sites: never carry cookies from one URL to another.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=concurrency + 4,
                max_keepalive_connections=concurrency,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,
            verify=True,
            trust_env=False,
            cookies=httpx.Cookies(no_cookies),
        )

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        await self._client.aclose()

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

    # ------------------------------------------------------------------ public
    async def fetch(self, url: str, options: FetchOptions | None = None) -> FetchResponse:
        """Fetch one URL (GET), following redirects; raises ``FetchError`` on failure."""
        options = options or FetchOptions()
        current = _validate(url)
        if options.render:
            raise FetchError("render_failed", "rendering is not available in this version")
        if options.proxy_type != "none":
            raise FetchError("proxy", f"proxy type {options.proxy_type!r} is not available")
        headers = self._headers(options.headers)
        state = _State(
            timeout_s=float(options.timeout_s),
            max_body=min(options.max_body_bytes, self._settings.max_body_bytes),
        )
        loop = asyncio.get_running_loop()
        hops = 0
        try:
            while True:
                hop = await self._with_retries(current, headers, state)
                if hop.location is None:
                    break
                hops += 1
                if hops > self._settings.max_redirects:
                    raise FetchError(
                        "too_many_redirects",
                        f"more than {self._settings.max_redirects} redirects",
                        http_status=hop.status,
                    )
                try:
                    nxt = current.join(hop.location)
                except (httpx.InvalidURL, ValueError) as exc:
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
                        headers.pop(name, None)
                current = nxt
        except FetchError as err:
            err.attempts = state.attempts
            if err.final_url is None:
                err.final_url = str(current)
            raise
        resp_headers = hop.headers or {}
        content_type_header = resp_headers.get("content-type")
        elapsed = loop.time() - (state.started or loop.time())
        return FetchResponse(
            url=url,
            final_url=str(current),
            status=hop.status,
            headers=resp_headers,
            content=hop.content,
            text=decode_body(hop.content, content_type_header),
            content_type=content_type_of(content_type_header),
            elapsed_ms=int(elapsed * 1000),
            attempts=state.attempts,
        )

    # ------------------------------------------------------------------ internals
    def _headers(self, extra: Mapping[str, str]) -> httpx.Headers:
        headers = self._default_headers.copy()
        for name, value in extra.items():
            headers[name] = value
        return headers

    @asynccontextmanager
    async def _slot(self, host: str) -> AsyncIterator[None]:
        # Host first: a request waiting for its host must not sit on a job-wide slot.
        async with self._hosts.hold(host), self._slots:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            try:
                yield
            finally:
                self._in_flight -= 1

    async def _with_retries(self, url: httpx.URL, headers: httpx.Headers, state: _State) -> _Hop:
        loop = asyncio.get_running_loop()
        retries = 0
        while True:
            try:
                return await self._attempt(url, headers, state)
            except _Retry as r:
                err = r.error
                if retries >= self._settings.fetch_retries:
                    raise err from r.__cause__
                delay = min(_BACKOFF_BASE_S * 2**retries, _BACKOFF_CAP_S)
                delay *= random.uniform(0.5, 1.5)
                if r.retry_after is not None:
                    delay = max(delay, min(r.retry_after, _RETRY_AFTER_CAP_S))
                if state.deadline is not None and loop.time() + delay >= state.deadline:
                    raise err from r.__cause__
                await asyncio.sleep(delay)
                retries += 1
                state.attempts += 1

    async def _attempt(self, url: httpx.URL, headers: httpx.Headers, state: _State) -> _Hop:
        loop = asyncio.get_running_loop()
        budget = state.timeout_s if state.deadline is None else state.deadline - loop.time()
        try:
            async with asyncio.timeout(max(0.001, min(10.0, budget))):
                await self._guard.check(url.host, url=str(url), attempts=state.attempts)
        except TimeoutError as exc:
            raise FetchError("dns", f"resolving {url.host!r} timed out") from exc
        async with self._slot(url.host):
            if state.deadline is None:
                state.started = loop.time()
                state.deadline = state.started + state.timeout_s
            remaining = state.deadline - loop.time()
            if remaining <= 0:
                raise FetchError("timeout", f"no complete response within {state.timeout_s:g} s")
            timeout = httpx.Timeout(remaining, connect=min(10.0, remaining))
            try:
                async with asyncio.timeout_at(state.deadline):
                    request = self._client.build_request(
                        "GET", url, headers=headers, timeout=timeout
                    )
                    response = await self._client.send(request, stream=True)
                    try:
                        return await self._handle(response, url, state)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise FetchError(
                    "timeout", f"no complete response within {state.timeout_s:g} s"
                ) from exc
            except httpx.HTTPError as exc:
                err = to_fetch_error(exc, url=str(url), timeout_s=state.timeout_s)
                if err.code in RETRYABLE_CODES:
                    raise _Retry(err) from exc
                raise err from exc

    async def _handle(self, response: httpx.Response, url: httpx.URL, state: _State) -> _Hop:
        status = response.status_code
        if status in _REDIRECT_STATUSES and response.headers.get("location"):
            return _Hop(status=status, location=response.headers["location"])
        if status == 429 or status >= 500:
            err = status_error(status, url=str(url))
            raise _Retry(err, _retry_after(response.headers.get("retry-after")))
        if status >= 400:
            raise status_error(status, url=str(url))
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > state.max_body:
            raise self._too_large(state, status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > state.max_body:
                raise self._too_large(state, status)
            chunks.append(chunk)
        return _Hop(status=status, headers=dict(response.headers), content=b"".join(chunks))

    @staticmethod
    def _too_large(state: _State, status: int) -> FetchError:
        return FetchError(
            "too_large", f"body larger than {state.max_body} bytes", http_status=status
        )
