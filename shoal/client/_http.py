"""Requests to the API: base URL and key, polite retries, problem details into ShoalError.

Retried, a bounded number of times: ``429`` (after its ``Retry-After``) and ``503`` (the API's
"not ready" and a busy Prefect: its ``Retry-After`` or a doubling backoff), and a connection
that could not be opened (nothing was sent). A request whose answer was lost on the way back
is retried only when repeating it is harmless (``idempotent``: every ``GET``, and ``POST
/v1/jobs`` because the client sends an ``Idempotency-Key``). :class:`Http` and
:class:`AsyncHttp` share the policy (:class:`_Attempts`) and differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from shoal.client._calls import Call
from shoal.client._errors import ShoalError

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
#: answers worth asking again: a rate or plan limit, a service not ready
RETRY_STATUSES = frozenset({429, 503})
#: never wait longer than this for one retry, whatever ``Retry-After`` says
MAX_WAIT_S = 60.0

Body = Callable[[], Iterable[bytes] | bytes]
AsyncBody = Callable[[], AsyncIterable[bytes] | bytes]


def base_url(url: str | None) -> str:
    """``url`` (else ``SHOAL_URL``, else the local default) without a trailing ``/v1``."""
    chosen = (url or os.environ.get("SHOAL_URL") or DEFAULT_URL).strip().rstrip("/")
    return chosen.removesuffix("/v1")


def api_key(given: str | None) -> str:
    key = given or os.environ.get("SHOAL_API_KEY")
    if not key:
        raise ShoalError(None, "no API key", "give api_key or set SHOAL_API_KEY")
    return key


def retry_after(response: httpx.Response, default: float) -> float:
    """Seconds the answer asks to wait (``Retry-After``: seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


class _Attempts:
    """The retry policy of one request: each outcome gives the seconds to wait before the
    next attempt, or raises what the caller gets."""

    def __init__(self, retries: int, base: str, method: str, idempotent: bool | None) -> None:
        self.left = retries
        self.base = base
        self.safe = method == "GET" if idempotent is None else idempotent
        self.wait = 1.0

    def _next(self, wait: float) -> float:
        self.left -= 1
        self.wait = min(wait * 2, MAX_WAIT_S)
        return min(wait, MAX_WAIT_S)

    def failed(self, exc: httpx.TransportError) -> float:
        unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        if self.left <= 0 or not (unsent or self.safe):
            title = "cannot reach Shoal" if unsent else "no answer from Shoal"
            raise ShoalError(None, title, f"{self.base}: {exc}") from exc
        return self._next(self.wait)

    def answered(self, response: httpx.Response) -> float | None:
        """``None`` for a 2xx answer (done)."""
        if response.is_success:
            return None
        if response.status_code not in RETRY_STATUSES or self.left <= 0:
            raise ShoalError.from_response(response)
        return self._next(retry_after(response, self.wait))


def _client_options(
    base: str, key: str | None, timeout: float, transport: object | None
) -> dict[str, Any]:
    """The options of the ``httpx`` client to ``base`` with the key."""
    return {
        "base_url": base,
        "headers": {"Authorization": f"Bearer {api_key(key)}", "User-Agent": "shoal-client"},
        "timeout": timeout,
        "transport": transport,
    }


def _call_options(call: Call[Any]) -> dict[str, Any]:
    """The keywords of ``request`` that send ``call``."""
    return {
        "json": call.json,
        "params": call.params,
        "headers": call.headers,
        "idempotent": call.idempotent,
    }


def _send_options(
    json: Any,
    params: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    body: Callable[[], Any] | None,
) -> dict[str, Any]:
    """The keywords of one attempt's ``httpx`` request (``body`` made anew for each)."""
    return {
        "json": json,
        "params": {k: v for k, v in (params or {}).items() if v is not None},
        "headers": headers,
        "content": body() if body is not None else None,
    }


class Http:
    """One ``httpx.Client`` to the API with the key; :meth:`request` retries and maps errors."""

    def __init__(
        self,
        url: str | None,
        key: str | None,
        *,
        timeout: float,
        retries: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base = base_url(url)
        self.retries = retries
        self.sleep: Callable[[float], None] = time.sleep
        self.client = httpx.Client(**_client_options(self.base, key, timeout, transport))

    def close(self) -> None:
        self.client.close()

    def run(self, call: Call[T]) -> T:
        r = self.request(call.method, call.path, **_call_options(call))
        return call.parse(r)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """The 2xx answer to ``method path``; anything else raises :class:`ShoalError`.

        ``body`` makes the request body anew for each attempt (a file is read again)."""
        attempts = _Attempts(self.retries, self.base, method, idempotent)
        while True:
            try:
                options = _send_options(json, params, headers, body)
                response = self.client.request(method, path, **options)
            except httpx.TransportError as exc:
                wait = attempts.failed(exc)
            else:
                done = attempts.answered(response)
                if done is None:
                    return response
                wait = done
            self.sleep(wait)


class AsyncHttp:
    """:class:`Http` on ``httpx.AsyncClient``."""

    def __init__(
        self,
        url: str | None,
        key: str | None,
        *,
        timeout: float,
        retries: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = base_url(url)
        self.retries = retries
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.client = httpx.AsyncClient(**_client_options(self.base, key, timeout, transport))

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self, call: Call[T]) -> T:
        r = await self.request(call.method, call.path, **_call_options(call))
        return call.parse(r)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: AsyncBody | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        attempts = _Attempts(self.retries, self.base, method, idempotent)
        while True:
            try:
                options = _send_options(json, params, headers, body)
                response = await self.client.request(method, path, **options)
            except httpx.TransportError as exc:
                wait = attempts.failed(exc)
            else:
                done = attempts.answered(response)
                if done is None:
                    return response
                wait = done
            await self.sleep(wait)
