"""The one place errors become RFC 9457 problem details: in the answers, and in the served OpenAPI
document (`document`), where every 4xx/5xx is the contract's `Problem`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shoal.contract import Problem, ProblemField
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
from shoal.settings import Settings, get_settings

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
    body = Problem(
        type=_TYPE_BASE + title.lower().replace(" ", "-"),
        title=title,
        status=status,
        detail=detail,
        errors=[ProblemField(loc=e.loc, msg=e.msg) for e in errors] if errors else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> tuple[int, list[FieldError]]:
    found = list(exc.errors())
    status = 400 if any(e.get("type") == "json_invalid" for e in found) else 422
    return status, field_errors(found)


def problem_for(exc: ShoalError) -> JSONResponse:
    """``exc`` as its problem details answer (also for ``api.ingress``, before any route)."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    headers = None
    if isinstance(exc, LimitExceeded):
        headers = {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": "Bearer"}
    return problem(status, exc.title, exc.detail, exc.errors, headers)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ShoalError)
    async def _shoal(_req: Request, exc: ShoalError) -> JSONResponse:
        return problem_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = _validation_errors(exc)
        if status == 400:
            return problem(400, "Malformed request body", "the body is not valid JSON", errors)
        return problem(422, "Invalid input", "the request has invalid fields", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(req))}
        return problem(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "Internal error", "an internal error occurred; it has been logged")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(req: Request) -> list[str]:
    """Every method some route of the app answers at ``req``'s path. Starlette's ``405`` names
    only the first route's methods, but a path such as ``/v1/jobs/{job_id}`` has a route per
    method (``GET``, ``DELETE``)."""
    routes = req.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**req.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


#: what each status means on any route that can answer it
_MEANING = {
    400: "Malformed body: not JSON (or not the declared format)",
    401: "Missing or unknown API key",
    404: "Unknown id, or another account's",
    409: "Conflict: the resource's state does not allow it",
    410: "Gone: removed by the account's retention",
    413: "The body is larger than its limit (`SHOAL_MAX_JSON_BODY_BYTES`, uploads "
    "`SHOAL_MAX_UPLOAD_BYTES`)",
    415: "Unsupported media type or `Content-Encoding`",
    422: "Invalid input: `errors` names each field",
    429: "A rate or plan limit was reached (`Retry-After` says when to try again)",
    503: "The scheduler (Prefect) is unavailable",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: the error statuses it answers, besides those every
    authenticated route (``401``), rate-limited route (``429``) or route with a body (``400``,
    ``413``, ``415``, ``422``) has."""
    return {code: {"description": _MEANING[code]} for code in codes}


def document(app: FastAPI) -> None:
    """Make the served OpenAPI document say what the handlers above answer: every 4xx/5xx of
    every operation is a ``Problem`` (``application/problem+json``), not FastAPI's default
    validation body; authenticated operations list ``401``, operations with a body ``400``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
        for path_item in schema.get("paths", {}).values():
            for op in path_item.values():
                _document_operation(op)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        _operator_limits(schemas, get_settings())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operator_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """Limits the operator sets, as the document's bounds: what ``shoal.jobs.validate`` checks."""

    def bound(model: str, field: str, key: str, value: int) -> None:
        prop = schemas.get(model, {}).get("properties", {}).get(field)
        if prop is None:
            return
        # ``x | None`` fields: the bound belongs to the non-null member
        target = next((m for m in prop.get("anyOf", []) if m.get("type") != "null"), prop)
        target[key] = value
        if key in prop:
            prop[key] = value

    for model in ("InlineInput", "JobCreate"):
        bound(model, "urls", "maxItems", settings.max_inline_urls)
    bound("OutputSpec", "expires_in_s", "maximum", settings.max_link_expiry_s)
    for model in ("ScrapeOptions", "UrlItem"):
        bound(model, "max_body_bytes", "maximum", settings.max_body_bytes)


def _document_operation(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    codes = {int(code) for code in responses if code.isdigit()}
    if op.get("security"):
        codes.add(401)
    if "requestBody" in op:
        codes.update((400, 413, 415))  # api.ingress: size limit, Content-Encoding
    codes.add(429)  # api.ingress: every request passes its caller's rate limit
    for code in sorted(codes):
        if code < 400:
            continue
        answer = responses.setdefault(str(code), {})
        if answer.get("description") in (None, "Validation Error", "Additional Response"):
            answer["description"] = _MEANING.get(code, "Error")
        answer["content"] = {"application/problem+json": {"schema": _PROBLEM_REF}}
