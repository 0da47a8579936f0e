"""The one error a caller of Shoal's API handles: :class:`ShoalError`.

The API answers every error as RFC 9457 problem details (``status``, ``title``, ``detail`` and,
for ``400``/``422``, ``errors`` naming each field). The client raises them as one type so a
caller (and the CLI) has one thing to catch and one place to read the field errors from; an
API that could not be reached at all is the same type with ``status`` ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: ``loc`` is a path such as ``defaults.extract.price``."""

    loc: str
    msg: str


class ShoalError(Exception):
    """An error answer of the API (problem details), or no answer at all (``status`` None)."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str = "",
        errors: list[FieldProblem] | None = None,
        type: str = "about:blank",
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        if self.detail and self.detail != self.title:
            head += f": {self.detail}"
        return "\n".join([head, *(f"  {e.loc}: {e.msg}" for e in self.errors)])

    @classmethod
    def from_response(cls, response: httpx.Response) -> ShoalError:
        """The problem details of ``response``; a body that is not one (a proxy's HTML page)
        still gives the status and the start of the body."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text[:200].strip()
            return cls(response.status_code, response.reason_phrase or "error", text)
        errors = [
            FieldProblem(str(e.get("loc", "")), str(e.get("msg", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        return cls(
            int(body.get("status") or response.status_code),
            str(body.get("title") or response.reason_phrase or "error"),
            str(body.get("detail") or ""),
            errors,
            str(body.get("type") or "about:blank"),
        )
