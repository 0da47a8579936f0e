"""Options and response of one fetch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch one URL (the fetch-related subset of ``ScrapeOptions``)."""

    timeout_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = 10 * 1024 * 1024
    proxy_type: str = "none"
    render: bool = False


@dataclass
class FetchResponse:
    """A fetched page (only 2xx/3xx responses become one; the rest raise ``FetchError``)."""

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    content: bytes
    text: str
    content_type: str
    elapsed_ms: int
    attempts: int
