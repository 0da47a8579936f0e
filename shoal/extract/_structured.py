"""Field values from a page's structured data: JSON-LD, microdata, OpenGraph/meta, heuristics."""

from __future__ import annotations

import json
import re
from typing import Any

from ._page import Page
from ._values import normalize_ws

#: Canonical field names and the names callers use for them (compared lower-case, alnum only).
_SYNONYMS: dict[str, str] = {
    "title": "name", "productname": "name", "product": "name", "producttitle": "name",
    "headline": "name",
    "cost": "price", "amount": "price", "priceamount": "price", "saleprice": "price",
    "currentprice": "price", "offerprice": "price",
    "currencycode": "currency", "pricecurrency": "currency", "curr": "currency",
    "stock": "availability", "instock": "availability", "available": "availability",
    "stockstatus": "availability", "avail": "availability",
    "imageurl": "image", "img": "image", "picture": "image", "photo": "image",
    "mainimage": "image", "thumbnail": "image",
    "link": "url", "producturl": "url", "href": "url",
    "summary": "description", "desc": "description",
    "manufacturer": "brand", "brandname": "brand", "maker": "brand",
    "ratingvalue": "rating", "stars": "rating", "averagerating": "rating", "score": "rating",
    "reviews": "review_count", "reviewcount": "review_count", "ratingcount": "review_count",
    "numreviews": "review_count",
    "ean": "gtin", "upc": "gtin", "barcode": "gtin", "gtin13": "gtin", "gtin12": "gtin",
    "gtin14": "gtin", "gtin8": "gtin", "isbn": "gtin",
    "productid": "sku", "itemnumber": "sku", "articlenumber": "sku",
    "mpn": "mpn", "partnumber": "mpn",
}  # fmt: skip

DEFAULT_FIELDS = ("name", "price", "currency", "sku", "brand", "availability")

_PRODUCT_TYPES = frozenset(
    {"product", "productgroup", "individualproduct", "productmodel", "someproducts"}
)
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_CURRENCY_SYMBOLS = (
    ("zł", "PLN"), ("r$", "BRL"), ("us$", "USD"), ("€", "EUR"), ("£", "GBP"), ("¥", "JPY"),
    ("₹", "INR"), ("₽", "RUB"), ("₺", "TRY"), ("₩", "KRW"), ("kč", "CZK"), ("$", "USD"),
)  # fmt: skip
_ISO_CURRENCY = re.compile(r"\b(USD|EUR|GBP|PLN|JPY|CHF|SEK|NOK|DKK|CZK|CAD|AUD|INR|BRL)\b")


def canonical(field: str) -> str:
    """``"Product Title"`` -> ``"name"``; unknown names come back lower-case alnum."""
    key = _NON_ALNUM.sub("", field.lower())
    return _SYNONYMS.get(key, key)


# ---------------------------------------------------------------------------- JSON-LD


def _load_jsonld(text: str) -> Any:
    text = text.strip()
    if text.startswith("<!--"):
        text = text[4:]
    if text.endswith("-->"):
        text = text[:-3]
    text = text.replace("<![CDATA[", "").replace("]]>", "").strip()
    if not text:
        return None
    try:
        return json.loads(text, strict=False)
    except ValueError:
        # common breakage: trailing commas
        try:
            return json.loads(re.sub(r",\s*([}\]])", r"\1", text), strict=False)
        except ValueError:
            return None


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("@type")
    items = t if isinstance(t, list) else [t]
    return {str(x).rsplit("/", 1)[-1].lower() for x in items if x}


def _walk(data: Any, out: list[dict[str, Any]], depth: int = 0) -> None:
    if depth > 6:
        return
    if isinstance(data, list):
        for item in data:
            _walk(item, out, depth + 1)
    elif isinstance(data, dict):
        if "@type" in data:
            out.append(data)
        for key, value in data.items():
            if key in ("@graph", "mainEntity", "itemListElement", "item", "about", "hasVariant"):
                _walk(value, out, depth + 1)


def jsonld_nodes(page: Page) -> list[dict[str, Any]]:
    cached = page.__dict__.get("_jsonld")
    if cached is not None:
        return cached
    nodes: list[dict[str, Any]] = []
    # lexbor's tag index, filtered here: 16 us on a 40 KB product page against 70 us for
    # css("script[type]") (bench/extract_values.py's pages), most of a JSON-LD lookup
    for script in page.tree.tags("script"):
        kind = (script.attributes.get("type") or "").strip().lower()
        if kind != "application/ld+json":
            continue
        _walk(_load_jsonld(script.text() or ""), nodes)
    page.__dict__["_jsonld"] = nodes
    return nodes


def _first(value: Any) -> Any:
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    return value


def _name_of(value: Any) -> Any:
    value = _first(value)
    if isinstance(value, dict):
        return value.get("name") or value.get("@id")
    return value


def _image_of(value: Any) -> Any:
    value = _first(value)
    if isinstance(value, dict):
        return value.get("url") or value.get("contentUrl") or value.get("@id")
    return value


def _last_segment(value: Any) -> Any:
    value = _first(value)
    if isinstance(value, str) and "schema.org" in value:
        return value.rstrip("/").rsplit("/", 1)[-1]
    return value


def _offer(product: dict[str, Any]) -> dict[str, Any]:
    offer = _first(product.get("offers"))
    if not isinstance(offer, dict):
        return {}
    inner = _first(offer.get("offers"))  # AggregateOffer with its offers listed
    if isinstance(inner, dict) and offer.get("price") is None and offer.get("lowPrice") is None:
        return {**offer, **inner}
    return offer


def _price_of(offer: dict[str, Any]) -> tuple[Any, Any]:
    price = offer.get("price")
    if price is None:
        price = offer.get("lowPrice")
    spec = _first(offer.get("priceSpecification"))
    currency = offer.get("priceCurrency")
    if isinstance(spec, dict):
        if price is None:
            price = spec.get("price")
        currency = currency or spec.get("priceCurrency")
    return price, currency


def jsonld_product(page: Page) -> dict[str, Any]:
    """Canonical fields of the first JSON-LD Product (empty when there is none)."""
    cached = page.__dict__.get("_jsonld_product")
    if cached is not None:
        return cached
    product = next((n for n in jsonld_nodes(page) if _types(n) & _PRODUCT_TYPES), None)
    out: dict[str, Any] = {}
    if product is not None:
        offer = _offer(product)
        price, currency = _price_of(offer)
        rating = product.get("aggregateRating")
        rating = _first(rating) if rating is not None else None
        gtin = next(
            (product[k] for k in ("gtin13", "gtin", "gtin12", "gtin14", "gtin8", "isbn")
             if product.get(k)),
            None,
        )  # fmt: skip
        out = {
            "name": _first(product.get("name")),
            "description": _first(product.get("description")),
            "sku": _first(product.get("sku") or offer.get("sku")),
            "mpn": _first(product.get("mpn")),
            "brand": _name_of(product.get("brand") or product.get("manufacturer")),
            "price": price,
            "currency": currency,
            "availability": _last_segment(offer.get("availability")),
            "image": _image_of(product.get("image")),
            "url": _first(product.get("url") or offer.get("url")),
            "gtin": gtin,
            "rating": rating.get("ratingValue") if isinstance(rating, dict) else None,
            "review_count": (
                (rating.get("reviewCount") or rating.get("ratingCount"))
                if isinstance(rating, dict)
                else None
            ),
            "_node": product,
        }
    page.__dict__["_jsonld_product"] = out
    return out


# ---------------------------------------------------------------------------- microdata

_ITEMPROPS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "description": ("description",),
    "sku": ("sku", "productID"),
    "mpn": ("mpn",),
    "brand": ("brand",),
    "price": ("price", "lowPrice"),
    "currency": ("priceCurrency",),
    "availability": ("availability",),
    "image": ("image",),
    "url": ("url",),
    "gtin": ("gtin13", "gtin", "gtin12", "gtin14", "gtin8"),
    "rating": ("ratingValue",),
    "review_count": ("reviewCount", "ratingCount"),
}


def _itemprop_value(node: Any) -> str | None:
    attrs = node.attributes
    for key in ("content", "value"):
        if attrs.get(key) is not None:
            return attrs[key]
    if node.tag in ("a", "link", "area"):
        return attrs.get("href")
    if node.tag in ("img", "source", "video", "audio", "embed", "iframe"):
        return attrs.get("src")
    if node.tag == "meta":
        return attrs.get("content")
    if node.tag in ("time",) and attrs.get("datetime"):
        return attrs["datetime"]
    if "itemscope" in attrs:  # e.g. brand as a nested Brand/Organization
        inner = node.css_first("[itemprop=name]")
        if inner is not None:
            return _itemprop_value(inner)
    return normalize_ws(node.text(deep=True, separator=" "))


def microdata(page: Page, key: str) -> Any:
    """The first ``itemprop`` value for canonical ``key``, inside a Product item if there is one."""
    scope = page.__dict__.get("_md_scope")
    if scope is None:
        scope = page.tree.css_first("[itemtype*='schema.org/Product' i]") or page.tree.root
        page.__dict__["_md_scope"] = scope
    if scope is None:
        return None
    props = _ITEMPROPS.get(key, (key,))
    for prop in props:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prop):
            continue
        node = scope.css_first(f"[itemprop~={prop} i]")
        if node is not None:
            value = _itemprop_value(node)
            if value not in (None, ""):
                return _last_segment(value) if key == "availability" else value
    return None


# ---------------------------------------------------------------------------- meta / OpenGraph

_META_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("og:title", "twitter:title"),
    "description": ("og:description", "description", "twitter:description"),
    "image": ("og:image", "og:image:url", "og:image:secure_url", "twitter:image"),
    "price": ("product:price:amount", "og:price:amount", "product:sale_price:amount"),
    "currency": ("product:price:currency", "og:price:currency"),
    "availability": ("product:availability", "og:availability"),
    "url": ("og:url",),
    "brand": ("product:brand", "og:brand"),
    "sku": ("product:retailer_item_id", "product:sku"),
    "gtin": ("product:ean", "product:upc", "product:gtin"),
}


def meta_value(page: Page, key: str, field: str | None = None) -> Any:
    meta = page.meta
    names = _META_KEYS.get(key)
    if names is None:
        raw = (field or key).lower()
        names = (raw, f"og:{raw}", f"product:{raw}", f"twitter:{raw}")
    for name in names:
        value = meta.get(name)
        if value:
            return value
    return None


# ---------------------------------------------------------------------------- heuristics


def _currency_in(text: str) -> str | None:
    m = _ISO_CURRENCY.search(text)
    if m:
        return m.group(1)
    lowered = text.lower()
    for symbol, code in _CURRENCY_SYMBOLS:
        if symbol in lowered:
            return code
    return None


def _price_text(page: Page) -> str | None:
    cached = page.__dict__.get("_price_text", False)
    if cached is not False:
        return cached
    found = None
    for node in page.tree.css("[class*=price i], [id*=price i]"):
        text = normalize_ws(node.text(deep=True, separator=" "))
        if any(ch.isdigit() for ch in text) and len(text) < 80:
            found = text
            break
    page.__dict__["_price_text"] = found
    return found


def heuristic(page: Page, key: str) -> Any:
    if key == "name":
        h1 = page.tree.css_first("h1")
        if h1 is not None:
            text = normalize_ws(h1.text(deep=True, separator=" "))
            if text:
                return text
        return page.title
    if key == "price":
        return _price_text(page)
    if key == "currency":
        price_text = _price_text(page)
        return _currency_in(price_text) if price_text else None
    if key == "url":
        node = page.tree.css_first("link[rel~=canonical i][href]")
        if node is not None:
            return node.attributes.get("href")
    return None


# what follows "priceCurrency" in JSON-LD ("priceCurrency": "USD") and microdata
# (itemprop="priceCurrency" content="USD")
_STATED = r"""["']?\s*(?::|content\s*=)\s*["']([A-Za-z]{3})["']"""
_STATED_STR = re.compile(_STATED)
_STATED_BYTES = re.compile(_STATED.encode())


def stated_currency(page: Page) -> str | None:
    """The currency code every ``priceCurrency`` of the page's source states, when they agree.

    What ``lookup(page, "currency")`` finds on a shop's page, for a 40th of its cost: a price
    printed with ``$`` or ``kr`` asks which one the page means on every page of a US shop, and
    the lookup parses the JSON-LD for it (37 us on bench/extract_values.py's 40 KB pages;
    ``str.find`` and a match at each hit: 0.9 us). ``None`` (no statement, or two that
    disagree) leaves the question to ``lookup``."""
    doc: str | bytes = page.utf8 if page.utf8 is not None else page.html
    if isinstance(doc, bytes):
        needle: str | bytes = b"priceCurrency"
        pattern: re.Pattern[Any] = _STATED_BYTES
    else:
        needle, pattern = "priceCurrency", _STATED_STR
    codes: set[str] = set()
    at = doc.find(needle)  # type: ignore[arg-type]
    while at >= 0 and len(codes) < 2:
        stated = pattern.match(doc, at + len(needle))
        if stated is not None:
            code = stated.group(1)
            codes.add((code.decode() if isinstance(code, bytes) else code).upper())
        at = doc.find(needle, at + len(needle))  # type: ignore[arg-type]
    return codes.pop() if len(codes) == 1 else None


# ---------------------------------------------------------------------------- lookup


def lookup(page: Page, field: str, *, heuristics: bool = True) -> Any:
    """The raw value for ``field`` from the first source that has it, else ``None``."""
    key = canonical(field)
    product = jsonld_product(page)
    value = product.get(key)
    if value is None and product and key not in product:
        node = product["_node"]
        value = next((v for k, v in node.items() if k.lower() == field.lower()), None)
        # a list of texts stays whole for a list[string] field (scalar types take the first)
        if isinstance(value, dict) or (
            isinstance(value, list) and not all(isinstance(v, str | int | float) for v in value)
        ):
            value = _name_of(value)
    if value in (None, ""):
        value = microdata(page, key)
    if value in (None, ""):
        value = meta_value(page, key, field)
    if value in (None, "") and heuristics:
        value = heuristic(page, key)
    return None if value == "" else value
