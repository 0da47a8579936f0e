"""``extract_data``: the ``data`` object of one result."""

from __future__ import annotations

from typing import Any

from shoal.contract import currency_field

from ._page import Page
from ._select import select
from ._structured import DEFAULT_FIELDS, canonical, lookup, stated_currency
from ._values import FIELD_TYPES, coerce, number_and_currency

_DEFAULT_TYPES = {"price": "number"}


def extract_data(
    html: str | Page,
    *,
    base_url: str,
    extract: dict[str, str] | None,
    selectors: dict[str, str] | None,
) -> dict[str, Any]:
    """Field values of one page, typed by ``extract`` (``string`` when only a selector names it).

    A field with a selector takes what the selector finds; one without looks in JSON-LD, then
    microdata, then OpenGraph/meta, then heuristics (first ``h1``, a ``*price*`` element).
    With neither ``extract`` nor ``selectors``: ``name, price, currency, sku, brand,
    availability`` from structured data (no heuristics). Missing values are ``None``.
    Each ``number`` field ``f`` also gives ``f_currency`` (unless the caller names such a field
    itself): the ISO 4217 code of the currency its text prints, else, for a price field
    (``price``, ``sale_price``, ``cost``, any name with ``price`` in it), the page's
    structured-data currency, which also decides a symbol several currencies print (``$``,
    ``kr``); ``None`` when neither says. Raises ``ExtractError`` for an invalid selector.
    """
    page = Page.of(html, base_url)
    if not extract and not selectors:
        base = page.base
        return {
            field: coerce(
                lookup(page, field, heuristics=False),
                _DEFAULT_TYPES.get(field, "string"),
                base_url=base,
            )
            for field in DEFAULT_FIELDS
        }
    types: dict[str, str] = dict(extract or {})
    for field in selectors or {}:
        types.setdefault(field, "string")
    # only a ``url`` field resolves against the page's <base>: skip looking for one otherwise
    base = page.base if "url" in types.values() else base_url
    out: dict[str, Any] = {}

    def page_currency() -> str | None:  # asked only for a price its text leaves open
        if "currency" not in found:
            value = stated_currency(page) or lookup(page, "currency", heuristics=False)
            found["currency"] = value if isinstance(value, str) else None
        return found["currency"]

    found: dict[str, str | None] = {}
    for field, field_type in types.items():
        if field_type not in FIELD_TYPES:
            raise ValueError(f"unknown field type {field_type!r} for {field!r}")
        spec = (selectors or {}).get(field)
        if spec:
            raw: Any = select(page, field, spec, many=field_type == "list[string]")
        else:
            raw = lookup(page, field)
        if field_type != "number":
            out[field] = coerce(raw, field_type, base_url=base)
            continue
        hint = page_currency if canonical(field) == "price" or "price" in field.lower() else None
        out[field], currency = number_and_currency(raw, hint)
        companion = currency_field(field)
        if companion not in types:
            out[companion] = currency
    return out
