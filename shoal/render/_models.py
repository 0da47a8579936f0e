"""What a render is asked for and what it gives back (plain data, no Playwright)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: the contract's default ``block_resources``: what costs bytes and never carries a price
DEFAULT_BLOCK: tuple[str, ...] = ("image", "media", "font")
#: Playwright's resource types (``Request.resource_type``): what ``block_resources`` may name
RESOURCE_TYPES = frozenset(
    {"document", "stylesheet", "image", "media", "font", "script", "texttrack", "xhr", "fetch",
     "eventsource", "websocket", "manifest", "other"}
)  # fmt: skip

Screenshot = Literal["viewport", "full_page"]


@dataclass(frozen=True)
class WaitFor:
    """When a page counts as rendered: ``load`` | ``networkidle`` | a selector | a delay."""

    kind: Literal["load", "networkidle", "selector", "ms"] = "load"
    selector: str | None = None
    ms: int = 0

    @classmethod
    def parse(cls, value: str | dict[str, object] | WaitFor | None) -> WaitFor:
        """The contract's spelling (``"load"``, ``{"selector": ".price"}``, ``{"ms": 500}``)."""
        if value is None:
            return cls()
        if isinstance(value, WaitFor):
            return value
        if value in ("load", "networkidle"):
            return cls(kind=value)  # type: ignore[arg-type]
        if isinstance(value, dict) and len(value) == 1:
            if isinstance(value.get("selector"), str) and value["selector"]:
                return cls(kind="selector", selector=str(value["selector"]))
            ms = value.get("ms")
            if isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= 60_000:
                return cls(kind="ms", ms=ms)
        raise ValueError(
            'wait_for must be "load", "networkidle", {"selector": "..."} or {"ms": 0..60000}'
        )


@dataclass
class Rendered:
    """A page as the browser left it: ``html`` is the DOM serialised after ``wait_for``.

    ``status``/``headers`` are the main document's (after redirects; header names lower-cased, as
    Playwright gives them); ``timings`` in seconds
    (``navigate``, ``wait``, ``content``, ``screenshot``, ``total``); ``refused``: the
    connections the page tried that the guard refused (``host:port reason``); ``attempts``: 2
    when a crash made the renderer try again."""

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    html: str
    screenshot_png: bytes | None = None
    timings: dict[str, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    dialogs: int = 0
    popups: int = 0
    attempts: int = 1
