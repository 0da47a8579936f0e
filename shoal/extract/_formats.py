"""The page formats a result can carry: html, text, markdown, links, metadata."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from ._page import Page
from ._values import normalize_ws

_INVISIBLE = ["script", "style", "noscript", "template", "svg", "iframe", "object", "head"]


def page_text(page: Page) -> str:
    """Visible text: scripts, styles and the head removed, whitespace collapsed."""
    tree = page.tree.clone()  # stripping mutates: keep the shared tree intact for selectors
    tree.strip_tags(_INVISIBLE)
    root = tree.body or tree.root
    if root is None:
        return ""
    return normalize_ws(root.text(deep=True, separator=" "))


def page_markdown(page: Page) -> str:
    import html2text

    conv = html2text.HTML2Text(baseurl=page.base or "")
    conv.body_width = 0
    conv.ignore_links = False
    conv.ignore_images = False
    conv.unicode_snob = True
    return conv.handle(page.html).strip() + "\n"


def _origin(base: str) -> tuple[str, str]:
    """(``scheme``, ``scheme://host``) of ``base``, for the cheap relative-link cases."""
    try:
        parts = urlsplit(base)
    except ValueError:
        return "", ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "", ""
    return parts.scheme, f"{parts.scheme}://{parts.netloc}"


def page_links(page: Page) -> list[str]:
    """Absolute http(s) links in document order, fragments dropped, each once."""
    base = page.base
    scheme, origin = _origin(base)
    seen: dict[str, None] = {}
    for node in page.tree.css("a[href], area[href]"):
        href = (node.attributes.get("href") or "").strip()
        if not href or href[0] == "#":
            continue
        # urljoin costs ~15 us a link: skip it for the common shapes that need no resolving
        if "/." in href or "\\" in href:
            url = ""
        elif href.startswith(("http://", "https://")):
            url = href
        elif href.startswith("//") and scheme:
            url = f"{scheme}:{href}"
        elif href[0] == "/" and origin:
            url = origin + href
        else:
            url = ""
        if url:
            url = url.split("#", 1)[0]
        else:
            try:
                url = urldefrag(urljoin(base, href))[0]
            except ValueError:
                continue
            if not url.startswith(("http://", "https://")):
                continue
        seen.setdefault(url, None)
    return list(seen)


def page_metadata(page: Page) -> dict[str, Any]:
    """``{title, description, canonical, language, og}``; ``og`` keys drop the ``og:`` prefix."""
    meta = page.meta
    canonical = None
    node = page.tree.css_first("link[rel~=canonical i][href]")
    if node is not None:
        href = (node.attributes.get("href") or "").strip()
        if href:
            try:
                canonical = urljoin(page.base, href)
            except ValueError:
                canonical = None
    html = page.tree.css_first("html")
    language = (html.attributes.get("lang") or "").strip() if html is not None else ""
    if not language:
        node = page.tree.css_first("meta[http-equiv='content-language' i][content]")
        language = (node.attributes.get("content") or "").strip() if node is not None else ""
    og = {k[3:]: v for k, v in meta.items() if k.startswith("og:") and len(k) > 3}
    return {
        "title": page.title or meta.get("og:title") or None,
        "description": meta.get("description") or meta.get("og:description") or None,
        "canonical": canonical,
        "language": language or None,
        "og": og,
    }


def page_formats(html: str | Page, *, base_url: str, formats: Iterable[str]) -> dict[str, Any]:
    """The asked formats of one page by name; ``data`` and ``screenshot`` are left to the caller.

    ``html`` may be a ``Page`` built for ``extract_data``, so the page is parsed once.
    """
    page = Page.of(html, base_url)
    out: dict[str, Any] = {}
    for name in formats:
        if name in out:
            continue
        if name == "html":
            out["html"] = page.html
        elif name == "text":
            out["text"] = page_text(page)
        elif name == "markdown":
            out["markdown"] = page_markdown(page)
        elif name == "links":
            out["links"] = page_links(page)
        elif name == "metadata":
            out["metadata"] = page_metadata(page)
        # "data" and "screenshot" are produced elsewhere
    return out
