"""Options and response of one fetch."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict


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
    respect_robots: bool = True


class FetchResponse:
    """A fetched page (only 2xx/3xx responses become one; the rest raise ``FetchError``).

    ``content`` is the decompressed body; ``text`` the body decoded with ``encoding``;
    ``content_type`` the media type without parameters (``text/html``), ``""`` when absent.
    ``text=None`` says the body is ASCII read as UTF-8 (``decode.ascii_as_utf8``): it is then
    decoded on first use, and a page parsed from its bytes (``utf8``) never pays for it.
    """

    __slots__ = (
        "url",
        "final_url",
        "status",
        "headers",
        "content",
        "_text",
        "content_type",
        "elapsed_ms",
        "attempts",
        "encoding",
    )

    def __init__(
        self,
        *,
        url: str,
        final_url: str,
        status: int,
        headers: CIMultiDict[str],
        content: bytes,
        text: str | None,
        content_type: str,
        elapsed_ms: int,
        attempts: int,
        encoding: str = "",
    ) -> None:
        self.url = url
        self.final_url = final_url
        self.status = status
        self.headers = headers
        self.content = content
        self._text = text
        self.content_type = content_type
        self.elapsed_ms = elapsed_ms
        self.attempts = attempts
        self.encoding = encoding

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.content.decode("ascii", "replace")
        return self._text

    def __repr__(self) -> str:
        return (
            f"FetchResponse(url={self.url!r}, status={self.status}, "
            f"content_type={self.content_type!r}, bytes={len(self.content)})"
        )

    @property
    def utf8(self) -> bytes | None:
        """``text`` as UTF-8 bytes without encoding it again: ``content`` itself when the body
        was UTF-8 without a BOM (bytes invalid in it read as U+FFFD either way); else None."""
        if self.encoding == "utf-8" and not self.content.startswith(codecs.BOM_UTF8):
            return self.content
        return None
