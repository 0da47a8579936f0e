"""Evaluating the caller's selectors: CSS (``@attr`` suffix) or ``xpath:`` expressions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shoal.errors import ExtractError

from ._page import Page
from ._values import normalize_ws

_ATTR_SUFFIX = re.compile(r"@([A-Za-z_:][-\w:.]*)\s*$")


@dataclass(frozen=True)
class Selector:
    kind: str  # "css" | "xpath"
    expr: str
    attr: str | None = None


def _outside_brackets(text: str, pos: int) -> bool:
    depth, quote = 0, ""
    for ch in text[:pos]:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
    return depth == 0 and not quote


@lru_cache(maxsize=4096)
def parse_selector(spec: str) -> Selector:
    """``"a.buy@href"`` -> css ``a.buy`` reading ``href``; ``"xpath://h1"`` -> XPath."""
    spec = spec.strip()
    if spec[:6].lower() == "xpath:":
        return Selector("xpath", spec[6:].strip())
    m = _ATTR_SUFFIX.search(spec)
    if m and _outside_brackets(spec, m.start()):
        css = spec[: m.start()].strip() or "*"
        return Selector("css", css, m.group(1))
    return Selector("css", spec)


@lru_cache(maxsize=1024)
def _xpath(expr: str) -> Any:
    from lxml import etree

    return etree.XPath(expr)


def _node_value(node: Any, attr: str | None) -> str | None:
    if attr is not None:
        value = node.attributes.get(attr)
        return None if value is None else normalize_ws(value)
    return normalize_ws(node.text(deep=True, separator=" "))


def _xpath_value(item: Any) -> str | None:
    if isinstance(item, str):  # attribute values and text() results are (smart) strings
        return normalize_ws(item)
    if isinstance(item, bool | int | float):
        return str(item)
    text_content = getattr(item, "text_content", None)
    if text_content is not None:
        return normalize_ws(text_content())
    text = getattr(item, "text", None)
    return normalize_ws(text) if isinstance(text, str) else None


def select(page: Page, field: str, spec: str, *, many: bool) -> list[str] | str | None:
    """The text (or attribute) the selector finds: all matches if ``many``, else the first.

    Empty matches are skipped; nothing found is ``None``. Bad syntax raises ``ExtractError``.
    """
    sel = parse_selector(spec)
    values: list[str] = []
    if sel.kind == "css":
        try:
            nodes = page.tree.css(sel.expr) if many else [page.tree.css_first(sel.expr)]
        except Exception as exc:  # selectolax raises its own error type (and ValueError)
            raise ExtractError(f"invalid CSS selector for {field!r}: {spec!r} ({exc})") from exc
        if not many and nodes[0] is not None:
            first = _node_value(nodes[0], sel.attr)
            if first:
                return first
            # the first match was empty: look further, as a caller would expect
            nodes = page.tree.css(sel.expr)
        for node in nodes:
            if node is None:
                continue
            value = _node_value(node, sel.attr)
            if value:
                values.append(value)
                if not many:
                    break
    else:
        from lxml import etree

        try:
            result = _xpath(sel.expr)(page.lxml_tree)
        except etree.XPathError as exc:
            raise ExtractError(f"invalid XPath for {field!r}: {spec!r} ({exc})") from exc
        items = result if isinstance(result, list) else [result]
        for item in items:
            value = _xpath_value(item)
            if value:
                values.append(value)
                if not many:
                    break
    if many:
        return values or None
    return values[0] if values else None


@lru_cache(maxsize=4096)
def selector_problem(spec: str) -> str | None:
    """Why ``spec`` is not a selector extraction can run, or ``None``.

    The validation entry point (``shoal.contract`` calls it when a job or a URL row is
    created): ``spec`` is run by ``select`` itself on an empty page, with the parsers
    extraction uses (selectolax for CSS, lxml for XPath), so what passes here cannot fail on a
    page for its syntax."""
    sel = parse_selector(spec)
    what = "XPath expression" if sel.kind == "xpath" else "CSS selector"
    try:
        select(Page("<html><body></body></html>"), "", spec, many=True)
    except ExtractError as exc:
        return f"not a valid {what}: {exc.__cause__ or exc}"
    except (ValueError, TypeError) as exc:  # lxml: NUL and control characters
        return f"not a valid {what}: {exc}"
    return None
