"""The error tree of Shoal.

    ShoalError                      base; never raised directly
    ├── InputError                  a request or input is invalid          -> 422
    │   ├── RenderUnavailable       `render` asked, no browser on this host -> 422
    │   ├── MalformedBody           the body is not valid JSON / CSV        -> 400
    │   └── UnsupportedMedia        a body of a content type not accepted   -> 415
    ├── AuthError                   missing or unknown API key              -> 401
    ├── NotFound                    unknown id, or another account's        -> 404
    ├── Gone                        existed, but expired / removed          -> 410
    ├── Conflict                    the state does not allow it             -> 409
    ├── TooLarge                    body or file over a limit               -> 413
    ├── LimitExceeded               rate or plan limit (retry_after)        -> 429
    ├── Unavailable                 a service Shoal needs (Prefect) is down -> 503
    │   └── NotReady                the service is not ready to start a job -> 503
    ├── FetchError                  one URL could not be fetched; carries a contract error
    │                               code (``timeout``, ``dns``...). Data, not a job failure.
    │   └── ExtractError            extraction of one page failed (``extract_failed``)
    └── JobFailed                   the job itself cannot run (unreadable input, internal fault)

Only ``api/`` maps these onto HTTP; nothing in ``shoal/`` knows about status codes of its own
responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One invalid field: ``loc`` is a dotted path such as ``input.urls[3]``."""

    loc: str
    msg: str


# pydantic inserts the member type of a union into locations; callers never wrote those
_TYPE_TAGS = frozenset(
    {"str", "int", "float", "bool", "dict", "list", "UrlItem", "InlineInput", "SingleUrlInput",
     "UploadInput", "S3Input", "JobCreate", "ScrapeOptions", "OutputSpec", "ScreenshotFormat"}
)  # fmt: skip


def format_loc(loc: tuple[int | str, ...], root: str = "body") -> str:
    """A pydantic location as callers write it: ``("body", "input", "urls", 3)`` ->
    ``input.urls[3]`` (``root`` when nothing is left)."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or (str(loc[0]) if loc else root)


def field_errors(errors: list[Any], root: str = "body") -> list[FieldError]:
    """pydantic's ``ValidationError.errors()`` as ``FieldError``s: locations as callers write
    them, ``unknown field`` for an extra one, one entry per location and message (a union's
    other members' complaints about a location already named are dropped)."""
    out: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in errors:
        loc = format_loc(tuple(err.get("loc", ())), root)
        msg = (
            "unknown field"
            if err.get("type") == "extra_forbidden"
            else str(err.get("msg", "invalid"))
        )
        if (loc, msg) in seen or (loc in {s[0] for s in seen} and "union" in msg):
            continue
        seen.add((loc, msg))
        out.append(FieldError(loc, msg))
    return out


class ShoalError(Exception):
    """Base of every error Shoal raises on purpose."""

    title = "Error"

    def __init__(self, detail: str = "", *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors or [])


class InputError(ShoalError):
    title = "Invalid input"


class RenderUnavailable(InputError):
    """Rendering was asked for where it cannot run: ``detail`` names the missing piece (the
    browser, or Playwright) and how to install it."""

    title = "Rendering not available"


class MalformedBody(InputError):
    title = "Malformed request body"


class UnsupportedMedia(InputError):
    title = "Unsupported media type"


class AuthError(ShoalError):
    title = "Unauthorized"


class NotFound(ShoalError):
    title = "Not found"


class Gone(ShoalError):
    title = "Gone"


class Conflict(ShoalError):
    title = "Conflict"


class TooLarge(ShoalError):
    title = "Payload too large"


class LimitExceeded(ShoalError):
    title = "Limit exceeded"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.retry_after = retry_after


class Unavailable(ShoalError):
    title = "Service unavailable"


class SchedulerBusy(Unavailable):
    """The scheduler (Prefect) is up but did not take a job's flow run in time (on SQLite it
    answers ``503`` while its one writer is busy). ``shoal.submit`` then keeps the job
    ``queued`` (``202``) and the resume service starts its flow run a minute later, instead of
    failing a job the caller was told nothing about."""


class NotReady(Unavailable):
    """Readiness failed: the store, Prefect or a deployment jobs start on is missing."""

    title = "Not ready"


class FetchError(ShoalError):
    """One URL failed. ``code`` is one of the contract's error codes (see ``ERROR_CODES``)."""

    title = "Fetch failed"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        final_url: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.final_url = final_url
        self.attempts = attempts


class ExtractError(FetchError):
    def __init__(self, message: str) -> None:
        super().__init__("extract_failed", message)


class JobFailed(ShoalError):
    title = "Job failed"


#: The per-URL error codes of the contract, in the order the contract lists them.
ERROR_CODES: tuple[str, ...] = (
    "invalid_url",
    "dns",
    "connect",
    "timeout",
    "tls",
    "too_many_redirects",
    "http_4xx",
    "http_5xx",
    "too_large",
    "blocked",
    "robots_disallowed",
    "render_failed",
    "extract_failed",
    "proxy",
    "http_304",  # Shoal's own: a 304 with no previous row to carry forward (shoal.conditional)
)
