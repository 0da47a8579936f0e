"""Extraction: selectors, typed values, structured data and page formats (inline fixtures)."""

from __future__ import annotations

import pytest

from shoal.errors import ExtractError
from shoal.extract import Page, coerce, extract_data, page_formats, parse_number, parse_selector

BASE = "https://shop.example.com/p/widget"

PRODUCT_HTML = """<!doctype html>
<html lang="en-GB"><head>
  <title>Widget – Shop</title>
  <meta name="description" content="A fine widget.">
  <meta property="og:title" content="OG Widget">
  <meta property="og:image" content="/img/og.jpg">
  <link rel="canonical" href="/p/widget?ref=canonical">
  <style>.hidden { display: none }</style>
  <script>var tracking = "do not show";</script>
</head><body>
  <h1 class="title">  Super
     Widget  </h1>
  <div class="product-price"><span class="amount">$1,299.99</span></div>
  <a class="buy" href="/cart/add?id=7">Buy</a>
  <a href="https://other.example.org/x#frag">Other</a>
  <a href="/cart/add?id=7#again">Buy again</a>
  <a href="mailto:shop@example.com">Mail</a>
  <a href="#top">Top</a>
  <img class="main" src="img/w.png">
  <ul class="tags"><li>red</li><li> blue </li><li></li><li>green</li></ul>
  <span id="stock">In stock</span>
  <span class="qty">1,234 pcs</span>
  <p>Some <b>bold</b> text.</p>
</body></html>"""

JSONLD_HTML = """<html><head>
<script type="application/ld+json">
{"@context": "https://schema.org", "@type": "Product", "name": "LD Widget",
 "sku": "W-1", "brand": {"@type": "Brand", "name": "Acme"}, "description": "From LD",
 "image": ["https://cdn.example.com/1.jpg", "https://cdn.example.com/2.jpg"],
 "gtin13": "4006381333931", "color": "Blue",
 "aggregateRating": {"@type": "AggregateRating", "ratingValue": "4.5", "reviewCount": "89"},
 "offers": {"@type": "Offer", "price": "29.99", "priceCurrency": "EUR",
            "availability": "https://schema.org/InStock"}}
</script>
<meta property="og:title" content="OG title">
</head><body><h1>Heading</h1></body></html>"""

GRAPH_HTML = """<html><head>
<script type="application/ld+json">
{"@context": "https://schema.org", "@graph": [
  {"@type": "WebSite", "name": "The Shop"},
  {"@type": "BreadcrumbList", "itemListElement": []},
  {"@type": ["Product"], "name": "Graph Widget", "brand": "Acme",
   "offers": [{"@type": "AggregateOffer", "lowPrice": 10, "highPrice": 20,
               "priceCurrency": "USD", "availability": "http://schema.org/OutOfStock"}]}
]}
</script></head><body></body></html>"""

OG_HTML = """<html><head>
<title>Title tag</title>
<meta property="og:title" content="OG Gadget">
<meta property="og:description" content="OG description">
<meta property="og:image" content="https://cdn.example.com/g.jpg">
<meta property="product:price:amount" content="1.299,00">
<meta property="product:price:currency" content="EUR">
</head><body><h1>Gadget heading</h1></body></html>"""

MICRODATA_HTML = """<html><body>
<div itemscope itemtype="https://schema.org/Product">
  <span itemprop="name">MD Widget</span>
  <div itemprop="brand" itemscope itemtype="https://schema.org/Brand">
    <span itemprop="name">MD Brand</span></div>
  <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
    <meta itemprop="priceCurrency" content="GBP">
    <span itemprop="price" content="12.50">£12.50</span>
    <link itemprop="availability" href="https://schema.org/InStock">
  </div>
</div></body></html>"""


# ---------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,299.99", 1299.99),
        ("1.299,99 €", 1299.99),
        ("1 299,99 zł", 1299.99),
        ("1\u00a0299,99\u00a0zł", 1299.99),
        ("29.99", 29.99),
        ("1,5", 1.5),
        ("€ 12", 12.0),
        ("1.234", 1234.0),  # price-parser's rule: three digits after one separator group
        ("1.234 €", 1234.0),
        ("Rp 31.500", 31500.0),
        ("200.000 đ", 200000.0),
        ("$.75", 0.75),
        (".75 €", 0.75),
        ("$119. 95", 119.95),
        ("118, 99 TL", 118.99),
        ("1.899,-", 1899.0),
        ("40% OFF", None),
        ("1,234", 1234.0),
        ("1,234,567", 1234567.0),
        ("1.234.567,89", 1234567.89),
        ("CHF 1'299.50", 1299.5),
        ("Price: -5", -5.0),
        ("12 345 678", 12345678.0),
        ("free", 0.0),
        ("Ausverkauft", None),
        ("", None),
    ],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("value", "field_type", "expected"),
    [
        ("  a   b ", "string", "a b"),
        (29.99, "string", "29.99"),
        (5.0, "string", "5"),
        ("$1,299.99", "number", 1299.99),
        (7, "number", 7.0),
        (True, "number", None),
        ("n/a", "number", None),
        ("1,234", "integer", 1234),
        ("12.6", "integer", 13),
        (3, "integer", 3),
        ("In Stock", "boolean", True),
        ("https://schema.org/OutOfStock", "boolean", False),
        ("yes", "boolean", True),
        ("0", "boolean", False),
        ("maybe", "boolean", None),
        ("/a/b.png", "url", "https://shop.example.com/a/b.png"),
        ("javascript:void(0)", "url", None),
        (["a", " ", "b"], "list[string]", ["a", "b"]),
        ("one", "list[string]", ["one"]),
        (None, "string", None),
        (None, "list[string]", None),
    ],
)
def test_coerce(value: object, field_type: str, expected: object) -> None:
    assert coerce(value, field_type, base_url=BASE) == expected


# ---------------------------------------------------------------------------- selectors


def test_selectors_css_attr_and_types() -> None:
    data = extract_data(
        PRODUCT_HTML,
        base_url=BASE,
        extract={
            "name": "string",
            "price": "number",
            "buy": "url",
            "image": "url",
            "tags": "list[string]",
            "in_stock": "boolean",
            "qty": "integer",
        },
        selectors={
            "name": "h1",
            "price": ".product-price .amount",
            "buy": "a.buy@href",
            "image": "img.main@src",
            "tags": "ul.tags li",
            "in_stock": "#stock",
            "qty": ".qty",
            "missing": ".does-not-exist",
        },
    )
    assert data == {
        "name": "Super Widget",
        "price": 1299.99,
        "price_currency": "USD",  # the "$" of the selected text
        "buy": "https://shop.example.com/cart/add?id=7",
        "image": "https://shop.example.com/p/img/w.png",
        "tags": ["red", "blue", "green"],
        "in_stock": True,
        "qty": 1234,
        "missing": None,
    }


def test_selectors_without_extract_are_strings() -> None:
    data = extract_data(
        PRODUCT_HTML, base_url=BASE, extract=None, selectors={"price": ".amount", "p": "p"}
    )
    assert data == {"price": "$1,299.99", "p": "Some bold text."}


def test_xpath_selectors() -> None:
    data = extract_data(
        PRODUCT_HTML,
        base_url=BASE,
        extract={"name": "string", "buy": "url", "tags": "list[string]", "n": "integer"},
        selectors={
            "name": "xpath://h1",
            "buy": "xpath://a[@class='buy']/@href",
            "tags": "xpath://ul[@class='tags']/li/text()",
            "n": "xpath:count(//a)",
        },
    )
    assert data == {
        "name": "Super Widget",
        "buy": "https://shop.example.com/cart/add?id=7",
        "tags": ["red", "blue", "green"],
        "n": 5,
    }


def test_list_field_matching_nothing_is_none() -> None:
    data = extract_data(
        PRODUCT_HTML, base_url=BASE, extract={"x": "list[string]"}, selectors={"x": "table td"}
    )
    assert data == {"x": None}


@pytest.mark.parametrize("bad", ["h1[[", "div >>> p", "xpath://div[", "xpath:)("])
def test_invalid_selector_raises_extract_error(bad: str) -> None:
    with pytest.raises(ExtractError) as info:
        extract_data(PRODUCT_HTML, base_url=BASE, extract=None, selectors={"f": bad})
    assert info.value.code == "extract_failed"


def test_parse_selector_attr_suffix() -> None:
    assert parse_selector("a.buy@href").attr == "href"
    assert parse_selector("a.buy@href").expr == "a.buy"
    assert parse_selector("a[href*='@x']").attr is None
    assert parse_selector("xpath://a/@href").kind == "xpath"


# ---------------------------------------------------------------------------- structured data


def test_jsonld_product_fields() -> None:
    data = extract_data(
        JSONLD_HTML,
        base_url=BASE,
        extract={
            "title": "string",
            "cost": "number",
            "currency": "string",
            "sku": "string",
            "brand": "string",
            "availability": "string",
            "in_stock": "boolean",
            "image": "url",
            "gtin": "string",
            "rating": "number",
            "review_count": "integer",
            "description": "string",
            "color": "string",
            "weight": "string",
        },
        selectors=None,
    )
    assert data == {
        "title": "LD Widget",
        "cost": 29.99,
        "cost_currency": "EUR",  # "cost" is a price: the offer's priceCurrency
        "currency": "EUR",
        "sku": "W-1",
        "brand": "Acme",
        "availability": "InStock",
        "in_stock": True,
        "image": "https://cdn.example.com/1.jpg",
        "gtin": "4006381333931",
        "rating": 4.5,
        "rating_currency": None,  # not a price: no page currency
        "review_count": 89,
        "description": "From LD",
        "color": "Blue",
        "weight": None,
    }


def test_jsonld_graph_and_aggregate_offer() -> None:
    data = extract_data(GRAPH_HTML, base_url=BASE, extract=None, selectors=None)
    assert data == {
        "name": "Graph Widget",
        "price": 10.0,
        "currency": "USD",
        "sku": None,
        "brand": "Acme",
        "availability": "OutOfStock",
    }


def test_opengraph_fallback() -> None:
    data = extract_data(
        OG_HTML,
        base_url=BASE,
        extract={"name": "string", "price": "number", "currency": "string", "image": "url"},
        selectors=None,
    )
    assert data == {
        "name": "OG Gadget",
        "price": 1299.0,
        "price_currency": "EUR",
        "currency": "EUR",
        "image": "https://cdn.example.com/g.jpg",
    }


def test_microdata() -> None:
    data = extract_data(MICRODATA_HTML, base_url=BASE, extract=None, selectors=None)
    assert data == {
        "name": "MD Widget",
        "price": 12.5,
        "currency": "GBP",
        "sku": None,
        "brand": "MD Brand",
        "availability": "InStock",
    }


def test_heuristics_without_structured_data() -> None:
    data = extract_data(
        PRODUCT_HTML,
        base_url=BASE,
        extract={"name": "string", "price": "number", "currency": "string"},
        selectors=None,
    )
    # og:title beats the h1 (structured data first), the price comes from the *price* element
    assert data == {
        "name": "OG Widget",
        "price": 1299.99,
        "price_currency": "USD",
        "currency": "USD",
    }
    bare = "<html><head><title>Only title</title></head><body><p>x</p></body></html>"
    assert extract_data(bare, base_url=BASE, extract={"name": "string"}, selectors=None) == {
        "name": "Only title"
    }


def test_defaults_with_neither_extract_nor_selectors() -> None:
    data = extract_data(JSONLD_HTML, base_url=BASE, extract=None, selectors=None)
    assert data == {
        "name": "LD Widget",
        "price": 29.99,
        "currency": "EUR",
        "sku": "W-1",
        "brand": "Acme",
        "availability": "InStock",
    }
    empty = extract_data("<html><body><p>hi</p></body></html>", base_url=BASE, extract={},
                         selectors={})  # fmt: skip
    assert empty == dict.fromkeys(("name", "price", "currency", "sku", "brand", "availability"))


def test_broken_jsonld_is_ignored() -> None:
    html = (
        '<script type="application/ld+json">{"@type": "Product", "name": </script>'
        '<script type="application/ld+json">{"@type": "Product", "name": "Ok",}</script>'
    )
    assert extract_data(html, base_url=BASE, extract=None, selectors=None)["name"] == "Ok"


# ---------------------------------------------------------------------------- formats


def test_formats() -> None:
    page = Page(PRODUCT_HTML, BASE)
    out = page_formats(
        page,
        base_url=BASE,
        formats=["data", "html", "text", "markdown", "links", "metadata", "screenshot"],
    )
    assert set(out) == {"html", "text", "markdown", "links", "metadata"}
    assert out["html"] == PRODUCT_HTML
    assert "Super Widget" in out["text"]
    assert "Some bold text." in out["text"]
    assert "tracking" not in out["text"]
    assert "display" not in out["text"]
    assert "  " not in out["text"]
    assert out["markdown"].startswith("#") and "Super Widget" in out["markdown"]
    assert "**bold**" in out["markdown"]
    assert "(https://shop.example.com/cart/add?id=7)" in out["markdown"]
    assert out["links"] == [
        "https://shop.example.com/cart/add?id=7",
        "https://other.example.org/x",
    ]
    assert out["metadata"] == {
        "title": "Widget – Shop",
        "description": "A fine widget.",
        "canonical": "https://shop.example.com/p/widget?ref=canonical",
        "language": "en-GB",
        "og": {"title": "OG Widget", "image": "/img/og.jpg"},
    }
    # the shared tree is still whole after the text format stripped its copy
    data = extract_data(page, base_url=BASE, extract=None, selectors={"s": "script"})
    assert data == {"s": 'var tracking = "do not show";'}


def test_base_href_is_honoured() -> None:
    html = (
        '<html><head><base href="https://cdn.example.net/dir/"></head>'
        '<body><a href="x">x</a></body></html>'
    )
    assert page_formats(html, base_url=BASE, formats=["links"]) == {
        "links": ["https://cdn.example.net/dir/x"]
    }


@pytest.mark.parametrize(
    ("head", "body", "base"),
    [
        ("", '<BASE HREF="/shop/"><a href="x">x</a>', "https://shop.example.com/shop/x"),
        (
            '<base target="_top"><base href="/a/"><base href="/b/">',
            "",
            "https://shop.example.com/a/x",
        ),
        ('<base href="">', '<base href="/late/">', f"{BASE.rsplit('/', 1)[0]}/x"),
        ("", "", f"{BASE.rsplit('/', 1)[0]}/x"),
    ],
)
def test_base_is_the_first_base_with_an_href(head: str, body: str, base: str) -> None:
    html = f"<html><head>{head}</head><body>{body}<a href='x'>x</a></body></html>"
    assert page_formats(html, base_url=BASE, formats=["links"])["links"][-1] == base


def test_page_parsed_from_utf8_bytes_reads_the_same() -> None:
    html = (
        "<html><head><title>Caf\u00e9 \u2603</title></head>"
        "<body><h1>Na\u00efve \u65e5\u672c</h1></body></html>"
    )
    as_text, as_bytes = Page(html, BASE), Page(html, BASE, utf8=html.encode())
    sel = {"t": "title", "h": "h1"}
    assert extract_data(as_bytes, base_url=BASE, extract=None, selectors=sel) == {
        "t": "Caf\u00e9 \u2603",
        "h": "Na\u00efve \u65e5\u672c",
    }
    assert extract_data(as_text, base_url=BASE, extract=None, selectors=sel) == extract_data(
        as_bytes, base_url=BASE, extract=None, selectors=sel
    )


def test_formats_of_empty_page() -> None:
    out = page_formats("", base_url=BASE, formats=["text", "links", "metadata", "markdown"])
    assert out["text"] == ""
    assert out["links"] == []
    assert out["metadata"]["title"] is None


def test_link_shapes() -> None:
    html = (
        '<a href="//cdn.example.com/a">1</a><a href="../up">2</a><a href="?q=1">3</a>'
        '<a href="HTTPS://Other.example.com/B">4</a><a href="/x/./y#z">5</a>'
        '<a href="javascript:go()">6</a><a href=" /p/widget ">7</a><a href="ftp://f/x">8</a>'
    )
    assert page_formats(html, base_url=BASE, formats=["links"])["links"] == [
        "https://cdn.example.com/a",
        "https://shop.example.com/up",
        "https://shop.example.com/p/widget?q=1",
        "https://Other.example.com/B",
        "https://shop.example.com/x/y",
        "https://shop.example.com/p/widget",
    ]
