"""Translating the transport's (and socket/ssl) exceptions into the contract's error codes."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from http import HTTPStatus

from shoal.errors import FetchError

from ._h1 import ProxyError
from ._policy import BlockedAddress

#: Codes worth another attempt (plus 408, 429 and 5xx responses, handled by the engine).
RETRYABLE_CODES = frozenset({"connect", "timeout"})

_TLS = (ssl.SSLError, ssl.CertificateError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify(exc: BaseException) -> str:
    """The contract error code for an exception raised while fetching."""
    chain = list(_chain(exc))
    if any(isinstance(e, BlockedAddress) for e in chain):
        return "blocked"
    # Proxy first: a proxy's TLS or DNS trouble is still the proxy's trouble.
    if isinstance(exc, ProxyError):
        return "proxy"
    if any(isinstance(e, _TLS) for e in chain):
        return "tls"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns"
    if isinstance(exc, TimeoutError):  # the transport's ConnectTimeout and ReadTimeout too
        return "timeout"
    # ServerDisconnected, InvalidResponse, resets and refusals (OSError), anything else.
    return "connect"


def to_fetch_error(
    exc: BaseException, *, url: str, attempts: int = 1, timeout_s: float | None = None
) -> FetchError:
    """A ``FetchError`` for ``exc``; the caller raises it ``from exc``."""
    code = classify(exc)
    if code == "timeout" and timeout_s is not None:
        message = f"no response within {timeout_s:g} s ({type(exc).__name__})"
    elif code == "blocked":
        message = str(next(e for e in _chain(exc) if isinstance(e, BlockedAddress)))
    else:
        message = _reason(exc)
    return FetchError(code, message, final_url=url, attempts=attempts)


def status_error(status: int, *, url: str, attempts: int = 1) -> FetchError:
    """``http_4xx``/``http_5xx`` for a final error status."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    code = "http_5xx" if status >= 500 else "http_4xx"
    message = f"HTTP {status} {phrase}".rstrip()
    return FetchError(code, message, http_status=status, final_url=url, attempts=attempts)
