"""The one place errors become RFC 9457 problem details."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.errors import (
    AuthError,
    Conflict,
    FieldError,
    Gone,
    InputError,
    LimitExceeded,
    MalformedBody,
    NotFound,
    ShoalError,
    TooLarge,
    Unavailable,
    UnsupportedMedia,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[ShoalError], int]] = [
    (MalformedBody, 400),
    (UnsupportedMedia, 415),
    (InputError, 422),
    (AuthError, 401),
    (NotFound, 404),
    (Gone, 410),
    (Conflict, 409),
    (TooLarge, 413),
    (LimitExceeded, 429),
    (Unavailable, 503),
]
_TYPE_BASE = "https://shoal.dev/problems/"
# pydantic inserts the member type of a union into locations; callers never wrote those
_TYPE_TAGS = {
    "str",
    "int",
    "float",
    "bool",
    "dict",
    "list",
    "UrlItem",
    "InlineInput",
    "SingleUrlInput",
    "UploadInput",
    "S3Input",
    "JobCreate",
    "ScrapeOptions",
    "OutputSpec",
}


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"loc": e.loc, "msg": e.msg} for e in errors]
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("body", "input", "urls", 3)`` -> ``input.urls[3]``."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or (str(loc[0]) if loc else "body")


def _validation_errors(exc: RequestValidationError) -> tuple[int, list[FieldError]]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    status = 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
        loc = format_loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        if (loc, msg) in seen or (loc in {s[0] for s in seen} and "union" in msg):
            continue
        seen.add((loc, msg))
        errors.append(FieldError(loc, msg))
    return status, errors


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ShoalError)
    async def _shoal(_req: Request, exc: ShoalError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        headers = None
        if isinstance(exc, LimitExceeded):
            headers = {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        return problem(status, exc.title, exc.detail, exc.errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = _validation_errors(exc)
        if status == 400:
            return problem(400, "Malformed request body", "the body is not valid JSON", errors)
        return problem(422, "Invalid input", "the request has invalid fields", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        return problem(
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "Internal error", "an internal error occurred; it has been logged")
