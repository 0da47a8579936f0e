"""Turning body bytes into text: BOM, then header charset, then ``<meta charset>``, then UTF-8."""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def content_type_of(header: str | None) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def charset_of(header: str | None) -> str | None:
    """The ``charset=`` parameter of a Content-Type header, if any."""
    if not header:
        return None
    for part in header.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def decode_body(content: bytes, content_type_header: str | None) -> str:
    """Decode a body the way a browser would, never raising."""
    for bom, name in _BOMS:
        if content.startswith(bom):
            return content[len(bom) :].decode(name if name != "utf-16" else _utf16(bom), "replace")
    encoding = _codec(charset_of(content_type_header))
    if encoding is None:
        m = _META_CHARSET.search(content[:4096])
        if m:
            encoding = _codec(m.group(1).decode("ascii", "replace"))
    if encoding is None:
        encoding = "utf-8"
    try:
        return content.decode(encoding, "replace")
    except (LookupError, ValueError):
        return content.decode("utf-8", "replace")


def _utf16(bom: bytes) -> str:
    return "utf-16-le" if bom == codecs.BOM_UTF16_LE else "utf-16-be"
