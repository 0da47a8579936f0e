"""What every request passes before a route runs: the caller's rate limit, the API key of a
request with a body, and the body's size.

A pure ASGI middleware (``Ingress``), so nothing reads a byte of a body it has not allowed:

1. The caller is the account of a valid ``Authorization: Bearer`` key, otherwise the client
   address. Each takes a token from its bucket (``api.ratelimit``; ``SHOAL_RATE_LIMIT_PER_S``,
   ``SHOAL_RATE_LIMIT_BURST``); an empty bucket is ``429`` with ``Retry-After``. The account found
   is handed to ``api.deps`` (no second lookup).
2. A request with a body (``Content-Length`` > 0 or ``Transfer-Encoding``) to an authenticated
   path and without a valid key is ``401`` before the body is read.
3. A body may not carry a ``Content-Encoding`` (``415``), except an upload's raw body in
   ``gzip``, which ``api.routers.uploads`` decompresses in bounded steps.
4. A ``Content-Length`` over the limit (uploads ``SHOAL_MAX_UPLOAD_BYTES``, any other body
   ``SHOAL_MAX_JSON_BODY_BYTES``) is ``413`` at once; a body without one is counted as it
   arrives and cut at the limit: the route sees its read fail, its answer is dropped, and the
   answer is ``413``.

Every refusal is problem details through ``api.errors.problem_for``, the same as a route's.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_for
from api.ratelimit import RateLimiter
from shoal.errors import (
    AuthError,
    FieldError,
    LimitExceeded,
    ShoalError,
    TooLarge,
    UnsupportedMedia,
)
from shoal.settings import Settings, get_settings
from shoal.store import AccountRow, get_store

#: ``scope`` key of the (key, account or None) the middleware found; ``api.deps`` reads it
AUTH_SCOPE_KEY = "shoal.auth"
UPLOADS = "/v1/uploads"
#: multipart framing around an uploaded file is allowed on top of its cap
FORM_SLACK = 64 * 1024
#: paths whose requests need no key (signed links, the API's own documents)
_OPEN_PREFIXES = ("/v1/health", "/v1/downloads/", "/v1/openapi.json")
_BODY_FREE = ("", "identity")


class _BodyCut(Exception):
    """The body went past its limit while being read."""


def bearer_key(headers: Headers) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, else ``None``."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    if path == UPLOADS or path.startswith(UPLOADS + "/"):
        return settings.max_upload_bytes + FORM_SLACK
    return settings.max_json_body_bytes


def _declares_body(headers: Headers) -> bool:
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (length.isdigit() and int(length) > 0)


def _needs_key(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_OPEN_PREFIXES)


class Ingress:
    """The middleware; ``app.add_middleware(Ingress)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: RateLimiter | None = None

    def _bucket(self, settings: Settings) -> RateLimiter | None:
        if settings.rate_limit_per_s <= 0:
            return None
        lim = self._limiter
        if lim is None or (lim.rate, lim.burst) != (
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
        ):
            lim = self._limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        return lim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._admit(scope, receive)
        except ShoalError as exc:
            await problem_for(exc)(scope, receive, send)
            return
        if body is None:
            await self.app(scope, receive, send)
        else:
            await self._run(scope, body, send)

    async def _admit(self, scope: Scope, receive: Receive) -> _CountedReceive | None:
        """Check the request's caller, key and body headers; for a request with a body, the
        ``receive`` the app gets."""
        settings = get_settings()
        headers = Headers(scope=scope)
        path: str = scope["path"]
        key = bearer_key(headers)
        account: AccountRow | None = None
        if key is not None:
            account = await asyncio.to_thread(get_store(settings).account_for_key, key)
        scope[AUTH_SCOPE_KEY] = (key, account)

        bucket = self._bucket(settings)
        if bucket is not None:
            client = scope.get("client")
            caller = f"account:{account.id}" if account else f"addr:{client[0] if client else ''}"
            wait = bucket.take(caller)
            if wait:
                raise LimitExceeded(
                    f"more than {settings.rate_limit_per_s:g} requests per second "
                    f"(burst {settings.rate_limit_burst}); try again in {wait} s",
                    retry_after=wait,
                )

        if not _declares_body(headers):
            return None
        if account is None and _needs_key(path):
            raise AuthError(
                "unknown API key"
                if key
                else "missing API key: send `Authorization: Bearer <api key>`"
            )
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in _BODY_FREE:
            _check_coding(encoding, path, headers)
        limit = body_limit(settings, path)
        length = headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit, f"the body is {length} bytes, more than the limit of {limit}")
        return _CountedReceive(receive, limit)

    async def _run(self, scope: Scope, receive: _CountedReceive, send: Send) -> None:
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if receive.cut:
                return  # the answer to a cut body is ours
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if not receive.cut:
                raise
        if receive.cut and not started:
            limit = receive.limit
            refusal = _too_large(limit, f"the body is more than the limit of {limit} bytes")
            await problem_for(refusal)(scope, receive, send)


def _check_coding(encoding: str, path: str, headers: Headers) -> None:
    """Only an upload's raw body may be compressed, and only with gzip: a form's coding would be
    the whole form's (it was read as if absent), a JSON body is never compressed."""
    is_upload = path == UPLOADS or path.startswith(UPLOADS + "/")
    if not is_upload:
        why = "only uploads may be sent compressed (gzip)"
    elif encoding not in ("gzip", "x-gzip"):
        why = "only gzip (or none) is supported"
    elif headers.get("content-type", "").lower().startswith("multipart/form-data"):
        why = (
            "a form is sent uncompressed: put a .gz file in its `file` field, or send the "
            "file itself as the body with Content-Encoding: gzip"
        )
    else:
        return
    raise UnsupportedMedia(
        f"Content-Encoding {encoding!r} is not accepted on this request",
        errors=[FieldError("Content-Encoding", why)],
    )


def _too_large(limit: int, detail: str) -> TooLarge:
    return TooLarge(
        detail,
        errors=[FieldError("body", f"larger than {limit} bytes")],
    )


class _CountedReceive:
    """``receive`` counting body bytes; past ``limit`` it sets ``cut`` and raises."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0
        self.cut = False

    async def __call__(self) -> Message:
        if self.cut:
            raise _BodyCut
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.cut = True
                raise _BodyCut
        return message
