"""Requests to the API: base URL and key, polite retries, problem details into ShoalError.

Retried, a bounded number of times: ``429`` (after its ``Retry-After``) and ``503`` (the API's
"not ready" and a busy Prefect: its ``Retry-After`` or a doubling backoff), and a connection
that could not be opened (nothing was sent). A request whose answer was lost on the way back
is retried only when repeating it is harmless (``idempotent``: every ``GET``, and ``POST
/v1/jobs`` because the client sends an ``Idempotency-Key``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from shoal.client._errors import ShoalError

DEFAULT_URL = "http://127.0.0.1:8000"
#: answers worth asking again: a rate or plan limit, a service not ready
RETRY_STATUSES = frozenset({429, 503})
#: never wait longer than this for one retry, whatever ``Retry-After`` says
MAX_WAIT_S = 60.0

Body = Callable[[], Iterable[bytes] | bytes]


def base_url(url: str | None) -> str:
    """``url`` (else ``SHOAL_URL``, else the local default) without a trailing ``/v1``."""
    chosen = (url or os.environ.get("SHOAL_URL") or DEFAULT_URL).strip().rstrip("/")
    return chosen.removesuffix("/v1")


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


class Http:
    """One ``httpx.Client`` to the API with the key; :meth:`request` retries and maps errors."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        retries: int,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "shoal-client",
    ) -> None:
        key = api_key or os.environ.get("SHOAL_API_KEY")
        if not key:
            raise ShoalError(None, "no API key", "give api_key or set SHOAL_API_KEY")
        self.base = base_url(url)
        self.retries = retries
        self.sleep: Callable[[float], None] = time.sleep
        self.client = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {key}", "User-Agent": user_agent},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

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
        safe = method == "GET" if idempotent is None else idempotent
        wait = 1.0
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.request(
                    method,
                    path,
                    json=json,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers=headers,
                    content=body() if body is not None else None,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise ShoalError(None, "cannot reach Shoal", f"{self.base}: {exc}") from exc
            except httpx.TransportError as exc:
                if last or not safe:
                    raise ShoalError(None, "no answer from Shoal", f"{self.base}: {exc}") from exc
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRY_STATUSES or last:
                    raise ShoalError.from_response(response)
                wait = retry_after(response, wait)
            self.sleep(min(wait, MAX_WAIT_S))
            wait = min(wait * 2, MAX_WAIT_S)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt raised
