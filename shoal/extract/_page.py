"""One parsed page, shared by data extraction and the output formats."""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import urljoin

try:  # lexbor is the fast backend; the older modest parser is the fallback
    from selectolax.lexbor import LexborHTMLParser as _Parser
except ImportError:  # pragma: no cover - depends on the selectolax build
    from selectolax.parser import HTMLParser as _Parser  # type: ignore[assignment,no-redef,attr-defined,unused-ignore]


class Page:
    """``html`` parsed once (selectolax), with lazily built views: lxml tree, JSON-LD, meta.

    Build one per fetched page and hand it to both ``extract_data`` and ``page_formats``.
    """

    def __init__(self, html: str | None, base_url: str = "", *, utf8: bytes | None = None) -> None:
        """``utf8``: the same document as UTF-8 bytes, when the caller has them (a body that
        already was UTF-8). The tree is then parsed from them: selectolax re-encodes a ``str``
        to UTF-8 first, ~20 % of the parse of a 44 KB page. With ``utf8``, ``html`` may be
        ``None``: it is decoded from ``utf8`` if something asks for it."""
        if html is None and utf8 is None:
            raise TypeError("Page needs html or utf8")
        self._html = html
        self.base_url = base_url
        self.utf8 = utf8

    @property
    def html(self) -> str:
        """The document as text."""
        if self._html is None:
            assert self.utf8 is not None
            self._html = self.utf8.decode("utf-8", "replace")
        return self._html

    @classmethod
    def of(cls, html: str | Page, base_url: str = "") -> Page:
        """``html`` itself when it is already a ``Page``, else a new one."""
        return html if isinstance(html, Page) else cls(html, base_url)

    @cached_property
    def tree(self) -> Any:
        """The selectolax tree (parsed on first use)."""
        return _Parser(self.utf8 if self.utf8 is not None else self.html)

    @cached_property
    def lxml_tree(self) -> Any:
        """An lxml tree, only built when an XPath selector needs one."""
        import lxml.html

        try:
            return lxml.html.fromstring(self.html or "<html></html>")
        except (ValueError, TypeError):  # e.g. a str with an XML encoding declaration
            return lxml.html.fromstring(self.html.encode("utf-8", "replace"))

    @cached_property
    def base(self) -> str:
        """The URL relative links resolve against (``<base href>`` wins over ``base_url``)."""
        # the first <base> with an href, anywhere (lexbor's tag index: ~4 us on a 44 KB page,
        # a quarter of a case-insensitive regex over the text)
        for node in self.tree.tags("base"):
            if "href" not in node.attributes:
                continue
            href = (node.attributes["href"] or "").strip()
            if href:
                try:
                    return urljoin(self.base_url, href)
                except ValueError:
                    pass
            break
        return self.base_url

    @cached_property
    def meta(self) -> dict[str, str]:
        """``<meta>`` content by lower-cased ``property``/``name``/``itemprop`` (first wins)."""
        out: dict[str, str] = {}
        # the tag index, not css("meta[content]"): a third of the cost on a 40 KB page
        for node in self.tree.tags("meta"):
            attrs = node.attributes
            content = attrs.get("content")
            if content is None:
                continue
            for key in ("property", "name", "itemprop"):
                name = attrs.get(key)
                if name:
                    out.setdefault(name.strip().lower(), content.strip())
        return out

    @cached_property
    def title(self) -> str | None:
        node = self.tree.css_first("title")
        if node is None:
            return None
        text = " ".join(node.text().split())
        return text or None
