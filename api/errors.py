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
    field_errors,
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


def _validation_errors(exc: RequestValidationError) -> tuple[int, list[FieldError]]:
    found = list(exc.errors())
    status = 400 if any(e.get("type") == "json_invalid" for e in found) else 422
    return status, field_errors(found)


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
