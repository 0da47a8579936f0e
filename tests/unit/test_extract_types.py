"""Typed fields read from markup written the way shops write it: currencies, stock flags,
image and link URLs, lists. Each case goes through ``extract_data``, as a job's page does."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.extract import Page, extract_data
from shoal.extract._currency import currency_code
from shoal.extract._values import _label_truth, join_url

BASE = "https://shop.example.com/p/widget-7"


def _one(body: str, field_type: str, selector: str | None = ".x", head: str = "") -> object:
    page = f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
    selectors = {"f": selector} if selector else None
    return extract_data(page, base_url=BASE, extract={"f": field_type}, selectors=selectors)["f"]


# ---------------------------------------------------------------------------- currency


def _hint(code: str) -> str:
    return f'<meta property="product:price:currency" content="{code}">'


@pytest.mark.parametrize(
    ("body", "head", "amount", "currency"),
    [
        ('<span class="price">1.299,00&nbsp;zł</span>', "", 1299.0, "PLN"),
        ('<div class="price"><span class="x">Rp</span> 31.500</div>', "", 31500.0, "IDR"),
        ('<p class="price">200.000 <sup>đ</sup></p>', "", 200000.0, "VND"),
        ('<span class="price">118, 99 TL</span>', "", 118.99, "TRY"),
        ('<span class="price">£12<sup>.99</sup></span>', "", 12.99, "GBP"),
        ('<span class="price">₹ 1,299</span>', "", 1299.0, "INR"),
        ('<span class="price">¥1,200</span>', "", 1200.0, "JPY"),
        ('<span class="price">¥1,200</span>', _hint("CNY"), 1200.0, "CNY"),
        ('<span class="price">$24.99</span>', "", 24.99, "USD"),  # $ alone: USD
        ('<span class="price">$24.99</span>', _hint("CAD"), 24.99, "CAD"),  # the page's dollar
        ('<span class="price">$24.99</span>', _hint("EUR"), 24.99, "USD"),  # EUR is no dollar
        ('<span class="price">CA$ 24.99</span>', _hint("USD"), 24.99, "CAD"),  # the text wins
        ('<span class="price">kr 1.299,-</span>', _hint("NOK"), 1299.0, "NOK"),
        ('<span class="price">1.299,- kr</span>', "", 1299.0, "SEK"),
        ('<span class="price">24,99 EUR</span>', "", 24.99, "EUR"),
        ('<span class="price">24.99</span>', _hint("gbp"), 24.99, "GBP"),  # only the hint
        ('<span class="price">24.99</span>', "", 24.99, None),
        ('<span class="price">40% OFF</span>', _hint("EUR"), None, "EUR"),
    ],
)
def test_price_and_its_currency(body: str, head: str, amount: float, currency: str) -> None:
    page = f"<html><head>{head}</head><body>{body}</body></html>"
    data = extract_data(
        page, base_url=BASE, extract={"price": "number"}, selectors={"price": ".price"}
    )
    assert data == {"price": amount, "price_currency": currency}


def test_structured_price_takes_the_offer_currency_other_numbers_none() -> None:
    page = """<html><head><script type="application/ld+json">
    {"@context": "https://schema.org", "@type": "Product", "name": "Kettle",
     "aggregateRating": {"@type": "AggregateRating", "ratingValue": "4.6", "reviewCount": 31},
     "offers": {"@type": "Offer", "price": 49.9, "priceCurrency": "CHF"}}
    </script></head><body><span class="was">CHF 59.90</span></body></html>"""
    data = extract_data(
        page,
        base_url=BASE,
        extract={"price": "number", "was": "number", "rating": "number"},
        selectors={"was": ".was"},
    )
    assert data == {
        "price": 49.9,
        "price_currency": "CHF",
        "was": 59.9,
        "was_currency": "CHF",  # its own text says so
        "rating": 4.6,
        "rating_currency": None,  # not a price: the offer's currency is not its
    }


def test_a_field_the_caller_names_like_the_companion_is_theirs() -> None:
    page = '<p class="p">€ 5</p><p class="c">euros</p>'
    data = extract_data(
        page,
        base_url=BASE,
        extract={"price": "number", "price_currency": "string"},
        selectors={"price": ".p", "price_currency": ".c"},
    )
    assert data == {"price": 5.0, "price_currency": "euros"}


def test_integer_fields_have_no_currency_column() -> None:
    data = extract_data(
        '<b class="q">Rp 1.500</b>', base_url=BASE, extract={"q": "integer"}, selectors={"q": ".q"}
    )
    assert data == {"q": 1500}


@pytest.mark.parametrize(
    ("symbol", "hint", "code"),
    [
        ("€", None, "EUR"),
        ("US$", "CAD", "USD"),
        ("R$", None, "BRL"),
        ("zł", None, "PLN"),
        ("руб.", None, "RUB"),
        ("грн", None, "UAH"),
        ("Kč", None, "CZK"),
        ("kr", "DKK", "DKK"),
        ("kr", "EUR", "SEK"),
        ("usd", None, "USD"),
        ("Fr.", None, "CHF"),
        ("KD", None, "KWD"),
        ("XYZ", None, None),
        (None, "€", "EUR"),
        (None, None, None),
    ],
)
def test_currency_code(symbol: str | None, hint: str | None, code: str | None) -> None:
    assert currency_code(symbol, hint) == code


# ---------------------------------------------------------------------------- boolean


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('<p class="x stock in-stock"><span class="icon"></span> In stock</p>', True),
        ('<p class="x">Only 2 left in stock - order soon.</p>', True),
        ('<div class="x">Sofort lieferbar</div>', True),
        ('<span class="x">En stock</span>', True),
        ('<span class="x">Pre-order now</span>', True),
        ('<span class="x">Currently unavailable.</span>', False),
        ('<span class="x">Temporarily out of stock</span>', False),
        ('<span class="x">Ausverkauft</span>', False),
        ('<span class="x">Nicht lieferbar</span>', False),
        ('<span class="x">Épuisé</span>', False),
        ('<span class="x">Rupture de stock</span>', False),
        ('<span class="x">Agotado</span>', False),
        ('<span class="x">Niedostępny</span>', False),
        ('<span class="x">Add to basket</span>', None),
        (
            '<p class="x">Our stores are open Monday to Saturday and most of our range is'
            " available for click and collect within two hours of ordering.</p>",
            None,  # a paragraph, not a stock label
        ),
    ],
)
def test_stock_labels(body: str, expected: bool | None) -> None:
    assert _one(body, "boolean") is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://schema.org/InStock", True),
        ("http://schema.org/LimitedAvailability", True),
        ("https://schema.org/PreOrder", True),
        ("https://schema.org/BackOrder", True),
        ("https://schema.org/MadeToOrder", True),
        ("https://schema.org/OutOfStock", False),
        ("https://schema.org/SoldOut", False),
        ("https://schema.org/Discontinued", False),
        ("schema:InStock", True),
    ],
)
def test_schema_org_availability(url: str, expected: bool) -> None:
    microdata = (
        '<div itemscope itemtype="https://schema.org/Product"><div itemprop="offers" itemscope'
        f' itemtype="https://schema.org/Offer"><link itemprop="availability" href="{url}">'
        "</div></div>"
    )
    data = extract_data(microdata, base_url=BASE, extract={"in_stock": "boolean"}, selectors=None)
    assert data == {"in_stock": expected}


# ---------------------------------------------------------------------------- url


@pytest.mark.parametrize(
    ("body", "selector", "expected"),
    [
        ('<img class="x" src="img/a.jpg">', ".x@src", "https://shop.example.com/p/img/a.jpg"),
        (
            '<a class="x" href="../c/kettles">Kettles</a>',
            ".x@href",
            "https://shop.example.com/c/kettles",
        ),
        (
            '<img class="x" src="//cdn.example.net/a.jpg">',
            ".x@src",
            "https://cdn.example.net/a.jpg",
        ),
        (
            '<img class="x" srcset="/i/a-320.jpg 320w, /i/a-1280.jpg 1280w, /i/a-640.jpg 640w">',
            ".x@srcset",
            "https://shop.example.com/i/a-1280.jpg",
        ),
        (
            '<img class="x" srcset="a.jpg, a@2x.jpg 2x">',
            ".x@srcset",
            "https://shop.example.com/p/a@2x.jpg",
        ),
        (
            '<img class="x" data-src="/lazy/a.webp" src="data:image/gif;base64,R0lGOD">',
            ".x@src",
            None,
        ),
        (
            '<img class="x" data-src="/lazy/a.webp">',
            ".x@data-src",
            "https://shop.example.com/lazy/a.webp",
        ),
        ('<a class="x" href="javascript:addToCart(7)">Buy</a>', ".x@href", None),
        (
            '<a class="x" href="https://other.example.org/a,b">x</a>',
            ".x@href",
            "https://other.example.org/a,b",
        ),
    ],
)
def test_urls(body: str, selector: str, expected: str | None) -> None:
    assert _one(body, "url", selector) == expected


def test_url_resolves_against_base_href() -> None:
    head = '<base href="https://static.example.com/shop/">'
    body = '<img class="x" src="p/7.jpg"><a class="y" href="/cart">cart</a>'
    assert _one(body, "url", ".x@src", head) == "https://static.example.com/shop/p/7.jpg"
    assert _one(body, "url", ".y@href", head) == "https://static.example.com/cart"


# ---------------------------------------------------------------------------- list[string]


def test_list_from_breadcrumbs_and_specs() -> None:
    body = """
    <nav><ol class="breadcrumb">
      <li><a href="/">Home</a></li>
      <li><a href="/c/kitchen">Kitchen &amp; Dining</a></li>
      <li class="sep"> </li>
      <li><span>Electric
          kettles</span></li>
    </ol></nav>
    <ul class="specs"><li><b>Capacity:</b> 1.7 l</li><li><b>Power:</b> 2200 W</li></ul>"""
    assert _one(body, "list[string]", ".breadcrumb li") == [
        "Home",
        "Kitchen & Dining",
        "Electric kettles",
    ]
    assert _one(body, "list[string]", ".specs li") == ["Capacity: 1.7 l", "Power: 2200 W"]
    assert _one(body, "list[string]", ".breadcrumb a@href") == ["/", "/c/kitchen"]
    assert _one(body, "list[string]", ".reviews li") is None


def test_list_from_structured_data() -> None:
    head = """<script type="application/ld+json">{"@type": "Product", "name": "Kettle",
    "color": ["Black", " ", "Steel"], "category": "Kitchen"}</script>"""
    page = f"<html><head>{head}</head><body></body></html>"
    data = extract_data(
        page,
        base_url=BASE,
        extract={"color": "list[string]", "category": "list[string]"},
        selectors=None,
    )
    assert data == {"color": ["Black", "Steel"], "category": ["Kitchen"]}


_BASES = [
    "https://shop.example.com/p/1", "http://a.example:8080/x/y?q=1#f", "HTTPS://U:P@Shop.example/",
    "https://shop.example.com", "ftp://files.example/a/", "mailto:x@example.com", "page.html",
]  # fmt: skip


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.sampled_from(_BASES), st.text(alphabet="/.\\?#%:@ab1-_~ é", max_size=16))
def test_join_url_is_urljoin(base: str, ref: str) -> None:
    """The fast join of root-relative references gives what ``urljoin`` gives, for any base
    and reference (dot segments, backslashes, protocol-relative, queries, fragments)."""
    assert join_url(base, ref) == urljoin(base, ref)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABCÉÄéäöü-!.,0123456789ßıİ", max_size=40))
def test_a_label_reads_the_same_cached_or_not_in_any_case(label: str) -> None:
    """Labels are matched lower-cased (the phrase patterns have no IGNORECASE): upper, lower
    and mixed case read alike, and the cached reading is the uncached one."""
    expected = _label_truth.__wrapped__(label)
    assert _label_truth(label) == expected
    assert _label_truth.__wrapped__(label.upper().lower()) == _label_truth.__wrapped__(
        label.lower()
    )
    if label.lower() == label.upper().lower():  # case-folding keeps the text
        assert _label_truth.__wrapped__(label.upper()) == expected


_LD = (
    '<script type="application/ld+json">'
    '{{"@type": "Product", "offers": {{"price": "1", {ld}}}}}</script>'
)
_ITEMPROP = '<meta itemprop="priceCurrency" content="{code}">'


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (_LD.format(ld='"priceCurrency": "cad"'), "CAD"),  # JSON-LD, any case
        (_ITEMPROP.format(code="AUD"), "AUD"),  # microdata
        (_LD.format(ld='"priceCurrency":"CAD"') + _ITEMPROP.format(code="CAD"), "CAD"),
        # two statements disagree: the lookup decides (JSON-LD's product first)
        (_LD.format(ld='"priceCurrency": "CAD"') + _ITEMPROP.format(code="AUD"), "CAD"),
        # no statement: the lookup reads <meta property="product:price:currency">
        ('<meta property="product:price:currency" content="NZD">', "NZD"),
        ("<p>priceCurrency is a schema.org property</p>", "USD"),  # no statement: $ is USD
    ],
)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_the_pages_stated_currency_decides_a_dollar(
    head: str, expected: str, as_bytes: bool
) -> None:
    """A ``$`` price takes the currency the page states; read from the page's text or, as a
    job hands it, from its UTF-8 bytes."""
    html = f'<html><head>{head}</head><body><span class="price">$24.99</span></body></html>'
    page = Page(None, BASE, utf8=html.encode()) if as_bytes else Page(html, BASE)
    data = extract_data(
        page, base_url=BASE, extract={"price": "number"}, selectors={"price": ".price"}
    )
    assert data == {"price": 24.99, "price_currency": expected}
