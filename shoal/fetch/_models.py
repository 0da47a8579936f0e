"""Options and response of one fetch."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch one URL (the fetch-related subset of ``ScrapeOptions``).

    ``timeout_s`` is one budget for everything after the URL first gets a slot: connecting,
    slow headers, slow-drip bodies, redirects, retries and their back-off.
    ``proxy_type`` is ``"none"`` (direct) or the name of an operator-configured proxy pool.
    """

    timeout_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = 10 * 1024 * 1024
    proxy_type: str = "none"
    render: bool = False
    respect_robots: bool = True


@dataclass
class FetchResponse:
    """A fetched page (only 2xx/3xx responses become one; the rest raise ``FetchError``).

    ``content`` is the decompressed body; ``text`` the body decoded with ``encoding``;
    ``content_type`` the media type without parameters (``text/html``), ``""`` when absent.
    """

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    content: bytes
    text: str
    content_type: str
    elapsed_ms: int
    attempts: int
    encoding: str = ""

    @property
    def utf8(self) -> bytes | None:
        """``text`` as UTF-8 bytes without encoding it again: ``content`` itself when the body
        was UTF-8 without a BOM (bytes invalid in it read as U+FFFD either way); else None."""
        if self.encoding == "utf-8" and not self.content.startswith(codecs.BOM_UTF8):
            return self.content
        return None
