"""``number`` extraction on price-parser's published real-world price strings, set by set.

Each example's text is put in a page the way a shop prints it (its currency hint, when the
example has one, as the page's ``product:price:currency``) and read back through
``extract_data`` with a selector: Shoal's whole extraction path, not only the parser. Each set
must read at least as many amounts right as price-parser itself does on the same strings, so a
regression in Shoal's path (whitespace, hints, caching, the minus sign) shows here per set.
Examples that pass a decimal-separator hint are left out: Shoal has none to pass.
"""

from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from price_parser import Price

from shoal.extract import extract_data
from shoal.extract._values import _AFTER, _BEFORE, fast_count, fast_price, read_price

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import price_parser_examples as examples  # noqa: E402

# set name -> examples read right by price-parser 0.5.1 (measured 2026-12-05); Shoal's path
# must match or beat price-parser on each
SETS = {
    "PRICE_PARSING_EXAMPLES_BUGS_CAUGHT": 4,
    "PRICE_PARSING_EXAMPLES_NEW": 15,
    "PRICE_PARSING_EXAMPLES": 178,
    "PRICE_PARSING_EXAMPLES_2": 210,
    "PRICE_PARSING_EXAMPLES_3": 277,
    "PRICE_PARSING_EXAMPLES_NO_PRICE": 6,
    "PRICE_PARSING_EXAMPLES_NO_CURRENCY": 350,
    "PRICE_PARSING_EXAMPLES_XFAIL": 15,
    "PRICE_PARSING_EXAMPLES_XFAIL_CURRENCIES_TO_BE_ADDED": 119,
}


def _cases(name: str) -> list[examples.Example]:
    return [e for e in getattr(examples, name) if e.decimal_separator is None]


def _right(got: float | None, expected: float | None) -> bool:
    if got is None or expected is None:
        return got is None and expected is None
    return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)


def _page(example: examples.Example) -> str:
    hint = ""
    if example.currency_raw:
        currency = html.escape(example.currency_raw)
        hint = f'<meta property="product:price:currency" content="{currency}">'
    text = html.escape(example.price_raw or "")
    return f'<html><head>{hint}</head><body><p class="price">{text}</p></body></html>'


def _shoal(example: examples.Example) -> float | None:
    data = extract_data(
        _page(example),
        base_url="https://shop.example.com/p/1",
        extract={"price": "number"},
        selectors={"price": ".price"},
    )
    return data["price"]


def _price_parser(example: examples.Example) -> float | None:
    return Price.fromstring(example.price_raw, example.currency_raw).amount_float


@pytest.mark.parametrize("name", list(SETS))
def test_each_set_reads_as_well_as_price_parser(name: str) -> None:
    cases = _cases(name)
    assert len(cases) == SETS[name]  # the vendored sets are the ones measured
    theirs = sum(_right(_price_parser(e), e.amount_float) for e in cases)
    read = [(e.price_raw, _shoal(e), e.amount_float) for e in cases]
    wrong = [r for r in read if not _right(r[1], r[2])]
    ours = len(cases) - len(wrong)
    assert ours >= theirs, f"{name}: {ours}/{len(cases)} vs {theirs}: {wrong[:10]}"


def test_the_main_sets_are_read_whole() -> None:
    """The four sets of shop strings the issue measured (Shoal's own parser: 96-99 %)."""
    for name in (
        "PRICE_PARSING_EXAMPLES",
        "PRICE_PARSING_EXAMPLES_2",
        "PRICE_PARSING_EXAMPLES_3",
        "PRICE_PARSING_EXAMPLES_NO_CURRENCY",
    ):
        wrong = [e.price_raw for e in _cases(name) if not _right(_shoal(e), e.amount_float)]
        assert wrong == [], name


def _same(
    fast: tuple[float | None, str | None, str | None],
    slow: tuple[float | None, str | None, str | None],
) -> bool:
    return _right(fast[0], slow[0]) and fast[1:] == slow[1:]


def test_fast_paths_read_as_price_parser() -> None:
    """Shoal reads plain and common prices without price-parser: every string of the sets, and
    the formats shops print most, that a fast path takes must read as price-parser reads it."""
    texts = [e.price_raw for name in SETS for e in getattr(examples, name) if e.price_raw]
    for p in (0.5, 7, 12.99, 999, 1000, 1234.5, 98765.43, 1234567.89):
        us, eu = f"{p:,.2f}", f"{p:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
        texts += [f"${us}", f"{eu} €", f"£{p:.2f}", f"{eu} zł", f"{p:,.0f}", f"CHF {us}"]
        texts += [f"{eu}", f"US$ {us}", f"{p:.2f}", f"{eu}\u00a0€", f"{eu} kr", f"{eu} TL"]
        texts += [f"Rp {p:,.0f}".replace(",", "."), f"CHF {us}".replace(",", "'")]
    taken = 0
    for text in texts:
        fast = fast_price(text)
        if fast is None:
            continue
        taken += 1
        assert _same(fast, read_price(text)), text
    assert taken > 200


_GROUPINGS = [("", "."), ("", ","), (",", "."), (".", ","), (" ", ","), (" ", "."), ("'", ".")]
_GROUPINGS += [("\u00a0", ","), ("'", ",")]


@st.composite
def _shop_prices(draw: st.DrawFn) -> str:
    """A price as shops print it: a symbol before or after (or none), thousands grouped one
    way, two decimals or none."""
    whole = draw(st.integers(0, 10**12))
    cents = draw(st.none() | st.integers(0, 99))
    group, point = draw(st.sampled_from(_GROUPINGS))
    digits = f"{whole:,}".replace(",", group) if group else str(whole)
    number = digits if cents is None else f"{digits}{point}{cents:02d}"
    space = draw(st.sampled_from(["", " "]))
    where = draw(st.sampled_from(["before", "after", "none"]))
    if where == "before":
        return f"{draw(st.sampled_from(_BEFORE))}{space}{number}"
    if where == "after":
        return f"{number}{space}{draw(st.sampled_from(_AFTER))}"
    return number


# settings as test_h1_properties: derandomized, so a run is repeatable and CI-stable
@settings(max_examples=400, derandomize=True, deadline=None)
@given(_shop_prices())
@example("Rp 31.500")
@example("CHF 1'234.99")
@example("1\u00a0234,56 zł")
def test_the_fast_path_takes_shop_prices_and_reads_them_as_price_parser(text: str) -> None:
    fast = fast_price(text)
    assert fast is not None, text  # the shapes it exists for are taken
    assert _same(fast, read_price(text)), (text, fast, read_price(text))


_NEAR = "0123456789.,'’ \u00a0$€£-−%+/:()kr złRpUSD\u0661５"


@settings(
    max_examples=600, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.text(alphabet=_NEAR, min_size=1, max_size=14))
def test_what_a_fast_path_takes_it_reads_as_price_parser(text: str) -> None:
    """Near misses: whatever a fast path accepts of arbitrary digits, separators, signs and
    symbols, it reads as price-parser does (most it leaves to price-parser)."""
    fast = fast_price(text)
    if fast is not None:
        assert _same(fast, read_price(text)), (text, fast, read_price(text))
    count = fast_count(text)
    if count is not None:
        assert _right(count, read_price(text)[0]), (text, count, read_price(text))


_WORDS = st.sampled_from(
    ["reviews", "(", ")", "stars", "ratings", "sold", "x", "No", "#", "Bewertungen", "avis",
     "opinii", "kr", "€", "e", "k", "ª", "Ⅻ", "½"]
)  # fmt: skip


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(_WORDS, max_size=3), st.integers(0, 10**15 - 1), st.lists(_WORDS, max_size=3))
@example(["("], 123, ["reviews", ")"])
def test_the_count_path_reads_counts_as_price_parser(
    before: list[str], n: int, after: list[str]
) -> None:
    text = " ".join([*before, str(n), *after])
    count = fast_count(text)
    assert count is not None, text
    assert _right(count, read_price(text)[0]), (text, count, read_price(text))
