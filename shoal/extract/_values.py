"""Turning the text shops print into typed values (``parse_price``, ``coerce``): prices and
their currency through price-parser, stock labels, URLs and srcsets, lists."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from price_parser import Price

from ._currency import ambiguous, currency_code

_WS = re.compile(r"\s+")
# a minus sign right before the number price-parser found ("-5", "\u22125")
_MINUS = ("-", "\u2212")
# price-parser costs 8.9 us a string against 3.9 us for Shoal's old parser (the 665 strings
# of its three main example sets, best of 5); shop labels repeat across a job's pages
# ("Free", "$9.99"), so short texts are cached (``parse_price`` on a hit: 0.65 us)
_CACHE_MAX_LEN = 200
# digits with a "." and 1-2 or 4+ decimals: a machine number (JSON-LD, content="..."), which
# price-parser reads as float() does (three decimals it takes for thousands)
_PLAIN = re.compile(r"\d{1,15}(?:\.(?:\d{1,2}|\d{4,}))?")
# The prices shops print most, whole ("$1,299.99", "1.299,99 €", "£12.99", "Rp 31.500",
# "CHF 1'234.99", "1 234,56 zł"): groups of exactly three digits (one separator throughout)
# and a decimal part of exactly two, so the reading is unambiguous and price-parser's
# (tests/unit/test_extract_prices.py checks this path against it on the published sets and
# on every shape the pattern admits, with Hypothesis). Between selectolax's queries
# price-parser's ten regular expressions run cold: 9-25 us a string against ~1 us here.
_BEFORE = ("US$", "R$", "$", "€", "£", "¥", "₹", "EUR", "USD", "GBP", "CHF", "Rp", "kr", "zł",
           "TL", "PLN")  # fmt: skip
_AFTER = ("€", "$", "£", "zł", "EUR", "USD", "GBP", "CHF", "PLN", "kr", "TL", "đ", "₫", "Kč",
          "Ft", "lei", "₽")  # fmt: skip


def _alternatives(symbols: tuple[str, ...]) -> str:
    return "|".join(re.escape(x) for x in sorted(symbols, key=len, reverse=True))


_SIMPLE = re.compile(
    rf"(?:(?P<pre>{_alternatives(_BEFORE)}) ?)?"
    r"(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]{2})?"
    r"|[0-9]{1,3}(?:\.[0-9]{3})+(?:,[0-9]{2})?"
    r"|[0-9]{1,3}(?P<sep>['\u00a0 ])[0-9]{3}(?:(?P=sep)[0-9]{3})*(?:[.,][0-9]{2})?"
    r"|[0-9]+(?:[.,][0-9]{2})?)"
    rf"(?: ?(?P<post>{_alternatives(_AFTER)}))?"
)
# A count as shops print it ("(1,234 reviews)" is not one, "(123 reviews)", "5 stars" are):
# one run of ASCII digits and no separator, sign, percent or other digit anywhere, which
# price-parser reads as that whole number (for an ``integer``, whose currency is never asked:
# the ``(123 reviews)`` of every product page cost 9 us through price-parser, 0.6 here)
_UNGROUP = re.compile(r"[^0-9]")
_COUNT = re.compile(r"[^\d.,'’%\-−+/:]*?([0-9]{1,15})[^\d.,'’%\-−+/:]*")

# whole values only: "1", "on" or "no" inside a sentence say nothing
# (and the commonest labels whole: 1.5 us, against 8 us for the phrase search below)
_TRUE = frozenset(
    {"true", "yes", "y", "1", "on", "t", "instock", "in_stock", "limitedavailability",
     "onlineonly", "instoreonly", "preorder", "presale", "backorder", "madetoorder",
     "in stock", "available", "limited availability"}
)  # fmt: skip
_FALSE = frozenset(
    {"false", "no", "n", "0", "off", "f", "outofstock", "out_of_stock", "soldout",
     "discontinued", "reserved", "out of stock", "sold out", "unavailable", "not available"}
)  # fmt: skip
# Stock labels as shops print them, in the languages Shoal's users scrape most; the negative
# phrases are tried first, as most contain a positive one ("not in stock", "indisponible",
# "niedostępny", "nicht lieferbar"). Only in a short text (a label, not a paragraph).
_OUT_OF_STOCK = re.compile(
    r"\b(?:out of stock|not in stock|sold out|unavailable|not available|no longer available"
    r"|discontinued|ausverkauft|nicht (?:auf lager|lieferbar|verfügbar|vorrätig)|vergriffen"
    r"|épuisé|epuise|rupture de stock|indisponible|non disponible|agotado|sin stock"
    r"|no disponible|esaurito|non disponibile|niet (?:op voorraad|leverbaar|beschikbaar)"
    r"|uitverkocht|niedostępny|brak w magazynie|wyprzedany|slutsåld|utsolgt|udsolgt"
    r"|slutsålt|нет в наличии|распродано|esgotado|indisponível)(?!\w)"
)
_IN_STOCK = re.compile(
    r"\b(?:in stock|available|pre-?order|back-?order|auf lager|lieferbar|verfügbar|vorrätig"
    r"|en stock|disponible|en existencia|disponibile|op voorraad|leverbaar|dostępny"
    r"|w magazynie|i lager|på lager|в наличии|em estoque|disponível|limited availability)(?!\w)"
)
_LABEL_MAX = 80
# one ``srcset`` descriptor: a width (``640w``) or a pixel density (``2x``, ``1.5x``)
_SRCSET_DESCRIPTOR = re.compile(r"(\d+(?:\.\d+)?)[wx]")

FIELD_TYPES = ("string", "number", "integer", "boolean", "url", "list[string]")


def normalize_ws(text: str) -> str:
    """Collapse runs of whitespace into one space and strip the ends."""
    return _WS.sub(" ", text).strip()


Reading = tuple[float | None, str | None, str | None]


@lru_cache(maxsize=8192)
def _price_of(text: str) -> Reading:
    """(amount, ISO code of the currency it prints, that currency as printed when the page's
    hint decides what it means): the fast paths' reading where one takes ``text``, else
    price-parser's (``read_price``)."""
    fast = fast_price(text)
    return fast if fast is not None else read_price(text)


def fast_price(text: str) -> Reading | None:
    """``read_price(text)`` for the shapes ``_PLAIN`` and ``_SIMPLE`` take, ``None`` for any
    other text."""
    if _PLAIN.fullmatch(text):  # what price-parser reads the same, at a tenth of its cost
        return float(text), None, None
    simple = _SIMPLE.fullmatch(text)
    if simple is None or (simple["pre"] and simple["post"]):
        return None
    num = simple["num"]
    whole, frac = (num[:-3], num[-2:]) if num[-3:-2] in (".", ",") else (num, "0")
    amount = float(f"{_UNGROUP.sub('', whole)}.{frac}")
    symbol = simple["pre"] or simple["post"]
    if symbol is None:
        return amount, None, None
    return amount, currency_code(symbol), symbol if ambiguous(symbol) else None


def read_price(text: str) -> Reading:
    """price-parser's reading of ``text``, its currency as an ISO code, a minus sign kept."""
    price = Price.fromstring(text)
    symbol = price.currency
    code = currency_code(symbol) if symbol else None
    open_symbol = symbol if symbol and ambiguous(symbol) else None
    decimal = price.amount
    if decimal is None or not decimal.is_finite():
        return None, code, open_symbol
    value = float(decimal)
    if not math.isfinite(value):
        return None, code, open_symbol
    at = text.find(price.amount_text or "\x00")
    if at > 0 and text[at - 1] in _MINUS:
        value = -value
    return value, code, open_symbol


def fast_count(text: str) -> float | None:
    """``read_price(text)``'s amount for a text ``_COUNT`` takes, ``None`` for any other."""
    count = _COUNT.fullmatch(text)
    return None if count is None else float(count.group(1))


def _parts(text: str) -> tuple[float | None, str | None, str | None]:
    if len(text) <= _CACHE_MAX_LEN:
        return _price_of(text)
    fast = fast_price(text)
    return fast if fast is not None else read_price(text)


def number_and_currency(
    value: Any, hint: Callable[[], str | None] | None = None
) -> tuple[float | None, str | None]:
    """``value`` as a ``number`` and the ISO 4217 code of its currency.

    The currency is the one a text prints (``parse_price``); ``hint()`` (the page's
    structured-data currency) is asked only when the text names none, or one several
    countries print (``$``, ``kr``): looking it up parses the page's JSON-LD, which a job
    with only selectors would otherwise never pay for."""
    value = _first(value)
    if isinstance(value, str):
        amount, code, open_symbol = _parts(value) if value else (None, None, None)
    else:
        amount, code, open_symbol = _to_number(value), None, None
    if hint is None or (code is not None and open_symbol is None):
        return amount, code
    page = hint()
    if page is None:
        return amount, code
    return amount, currency_code(open_symbol, page) if open_symbol else currency_code(None, page)


def parse_price(text: str, currency_hint: str | None = None) -> tuple[float | None, str | None]:
    """The price in ``text`` as (amount, ISO 4217 currency), reading what shops print.

    The amount is price-parser's (``Price.fromstring``), which read 100 % of the 1,021 real
    shop strings of its published example sets against 96-99 % for Shoal's own parser before
    (tests/unit/test_extract_prices.py): ``Rp 31.500`` is 31500, ``$.75`` 0.75, ``$119. 95``
    119.95, ``1.899,-`` 1899, ``40% OFF`` no price, ``Free`` 0. A single ``.`` or ``,``
    followed by exactly three digits groups thousands (``1.234`` is 1234). A minus sign right
    before the number makes it negative. The currency is the text's own symbol or code, else
    ``currency_hint`` (the page's structured data), as an ISO code (``currency_code``).
    """
    return number_and_currency(text, lambda: currency_hint)


def parse_number(text: str) -> float | None:
    """The number in ``text`` as a float (``parse_price``'s amount); ``None`` if none."""
    if not text:
        return None
    count = fast_count(text)
    return count if count is not None else _parts(text)[0]


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
    return _label_truth(value) if len(value) <= _CACHE_MAX_LEN else _label_truth.__wrapped__(value)


@lru_cache(maxsize=4096)
def _label_truth(value: str) -> bool | None:
    """What a label says: a yes/no word, a schema.org availability, a stock phrase. Cached:
    a job's pages print a handful of labels (the phrase search costs 8 us, a hit 0.3)."""
    text = normalize_ws(value).lower()  # the phrases are lower case: no IGNORECASE to pay
    if "schema.org/" in text or text.startswith("schema:"):
        text = text.rstrip("/").rsplit("/", 1)[-1].removeprefix("schema:")
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if len(text) > _LABEL_MAX:
        return None
    if _OUT_OF_STOCK.search(text):
        return False
    if _IN_STOCK.search(text):
        return True
    return None


def _srcset_pick(text: str) -> str:
    """The largest candidate of a ``srcset`` (``a.jpg 320w, b.jpg 640w`` -> ``b.jpg``), or
    ``text`` itself when it is not one: the caller asked for one image, the best one."""
    best, best_size = text, -1.0
    for candidate in text.split(","):
        parts = candidate.split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1:
            m = _SRCSET_DESCRIPTOR.fullmatch(parts[1])
            if m is None:
                return text
            size = float(m.group(1))
        if size > best_size:
            best, best_size = parts[0], size
    return best


@lru_cache(maxsize=256)
def _origin(base_url: str) -> str | None:
    """``scheme://netloc`` of an http(s) base, ``None`` for any other base."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def join_url(base_url: str, ref: str) -> str:
    """``urljoin(base_url, ref)``, without its cost for the reference pages print most: a path
    from the root (``/img/1.jpg``) with no dot segment, backslash or empty part is the base's
    origin and itself (urljoin: 5.8 us; this: 0.4; tests/unit/test_extract_types.py checks
    it against urljoin with Hypothesis)."""
    if (
        ref[:1] == "/"
        and ref[1:2] != "/"
        and "/." not in ref
        and "\\" not in ref
        and ref[-1] not in "?#"  # urljoin drops an empty query or fragment
        and "?#" not in ref
    ):
        origin = _origin(base_url)
        if origin is not None:
            return origin + ref
    return urljoin(base_url, ref)


def _to_url(value: Any, base_url: str) -> str | None:
    text = _as_text(value)
    if text is None:
        return None
    if " " in text and _SRCSET_DESCRIPTOR.search(text):
        text = _srcset_pick(text)
    try:
        url = join_url(base_url, text) if base_url else text
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
