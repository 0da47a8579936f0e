"""Turning the text shops print into typed values (``parse_number``, ``coerce``)."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

_WS = re.compile(r"\s+")
# A number as printed: digits with ., , spaces (incl. no-break and thin) or apostrophes between.
_NUMBER = re.compile(r"[-\u2212]?\d(?:[\d.,'\u2019\s]*\d)?")
_GROUP_SPACES = re.compile(r"[\s'\u2019]+")
# Currencies written with a decimal comma: with one of these, "1.234" is one thousand two
# hundred and thirty-four.
_COMMA_DECIMAL_MARKERS = re.compile(
    r"€|\beur\b|zł|\bpln\b|\bkr\b|\bsek\b|\bnok\b|\bdkk\b|kč|\bczk\b|₽|\brub\b|r\$|\bbrl\b"
    r"|₺|\btry\b|\bft\b|\bhuf\b|\blei\b|\bron\b|₴|\buah\b",
    re.IGNORECASE,
)

_TRUE = frozenset(
    {"true", "yes", "y", "1", "on", "t", "in stock", "instock", "in_stock", "available",
     "limitedavailability", "limited availability", "onlineonly", "instoreonly", "preorder",
     "presale", "backorder"}
)  # fmt: skip
_FALSE = frozenset(
    {"false", "no", "n", "0", "off", "f", "out of stock", "outofstock", "out_of_stock",
     "sold out", "soldout", "unavailable", "not available", "discontinued"}
)  # fmt: skip

FIELD_TYPES = ("string", "number", "integer", "boolean", "url", "list[string]")


def normalize_ws(text: str) -> str:
    """Collapse runs of whitespace into one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def _join_space_groups(token: str) -> str:
    """Keep spaces/apostrophes only as thousands separators ("1 299,99"), cut the token else."""
    parts = _GROUP_SPACES.split(token)
    out = prev = parts[0]
    if not re.fullmatch(r"[-\u2212]?\d{1,3}", prev):
        return out
    for part in parts[1:]:
        if not re.match(r"\d{3}(?:$|[.,])", part):
            break
        out += part
        if len(part) != 3:  # "299,99": the decimal part ends the number
            break
    return out


def parse_number(text: str) -> float | None:
    """The first number in ``text`` as a float, reading what shops print; ``None`` if none.

    Rules, applied to the first run of digits and separators:
    - spaces and apostrophes group thousands (``1 299,99 zł``, ``1'299.50``);
    - with both ``.`` and ``,`` present, the one that comes last is the decimal separator
      (``$1,299.99``, ``1.299,99 €``);
    - one kind repeated is a thousands separator (``1,234,567``, ``1.234.567``);
    - a single ``,`` followed by exactly three digits groups thousands (``1,234`` -> 1234),
      otherwise it is the decimal separator (``1,5`` -> 1.5, ``12,99`` -> 12.99);
    - a single ``.`` is the decimal separator (``1.234`` -> 1.234, ``29.99``), except when
      followed by exactly three digits in text that names a currency written with a decimal
      comma (``€``, ``zł``, ``kr``...): ``1.234 €`` -> 1234.0.
    """
    if not text:
        return None
    m = _NUMBER.search(text)
    if m is None:
        return None
    token = _join_space_groups(m.group(0))
    negative = token[:1] in ("-", "\u2212")
    token = token.lstrip("-\u2212")
    dots, commas = token.count("."), token.count(",")
    if dots and commas:
        decimal = "." if token.rfind(".") > token.rfind(",") else ","
        thousands = "," if decimal == "." else "."
        token = token.replace(thousands, "").replace(decimal, ".")
    elif commas:
        whole, _, frac = token.rpartition(",")
        if commas > 1 or (len(frac) == 3 and whole not in ("", "0")):
            token = token.replace(",", "")
        else:
            token = token.replace(",", ".")
    elif dots > 1:
        token = token.replace(".", "")
    elif dots == 1:
        whole, _, frac = token.partition(".")
        if len(frac) == 3 and whole not in ("", "0") and _COMMA_DECIMAL_MARKERS.search(text):
            token = whole + frac
    try:
        value = float(token)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return -value if negative else value


def _first(value: Any) -> Any:
    while isinstance(value, list | tuple):
        if not value:
            return None
        value = value[0]
    return value


def _as_text(value: Any) -> str | None:
    value = _first(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    if isinstance(value, dict):
        return None
    text = normalize_ws(str(value))
    return text or None


def _to_number(value: Any) -> float | None:
    value = _first(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return parse_number(value)
    return None


def _to_bool(value: Any) -> bool | None:
    value = _first(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if not isinstance(value, str):
        return None
    text = normalize_ws(value).lower()
    if "schema.org/" in text:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _to_url(value: Any, base_url: str) -> str | None:
    text = _as_text(value)
    if text is None:
        return None
    try:
        url = urljoin(base_url, text) if base_url else text
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    if scheme in ("javascript", "vbscript", "data") or (base_url and scheme == ""):
        return None
    return url


def coerce(value: Any, field_type: str, *, base_url: str = "") -> Any:
    """``value`` as ``field_type`` (a contract ``FieldType``); ``None`` when it cannot be.

    Lists give their first item for scalar types; ``list[string]`` keeps every non-empty item.
    ``integer`` rounds to the nearest whole number; ``url`` resolves against ``base_url``.
    """
    if field_type == "string":
        return _as_text(value)
    if field_type == "number":
        return _to_number(value)
    if field_type == "integer":
        number = _to_number(value)
        return None if number is None else int(round(number))
    if field_type == "boolean":
        return _to_bool(value)
    if field_type == "url":
        return _to_url(value, base_url)
    if field_type == "list[string]":
        if value is None:
            return None
        items = value if isinstance(value, list | tuple) else [value]
        texts = [t for t in (_as_text(i) for i in items) if t is not None]
        return texts
    raise ValueError(f"unknown field type {field_type!r}")
