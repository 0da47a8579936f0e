"""Currency symbols and codes as printed on shop pages -> ISO 4217 codes (``currency_code``).

price-parser finds the currency text next to a price (``$``, ``US$``, ``Rp``, ``zł``, ``EUR``)
but returns it as printed; Shoal's ``<field>_currency`` column is an ISO 4217 code. The symbol
table is price-parser's own currency data (``price_parser._currencies.CURRENCIES``: 208 codes
with their symbols, pinned with the package in requirements.lock) plus the symbols shops print
that it lacks or shares between currencies (``₽``, ``₺``, ``грн``, ``US$``, ``kr``...).

A symbol several countries' shops print (``$``, ``kr``, ``¥``, ``fr``, ``Rs``, ``R``) takes the
page's hint (structured data ``priceCurrency``, ``<meta property="product:price:currency">``)
when the hint is one of the currencies that symbol can mean; otherwise its most common
meaning on the web: ``$`` USD, ``kr`` SEK, ``¥`` JPY, ``fr`` CHF, ``Rs`` INR, ``R`` ZAR.
``£`` is GBP.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

from price_parser._currencies import CURRENCIES

# symbol (lower-case, no trailing dot) -> its default code; these win over the derived table
_DEFAULTS: dict[str, str] = {
    "$": "USD", "us$": "USD", "usd$": "USD", "u$s": "USD", "ca$": "CAD", "c$": "CAD",
    "cad$": "CAD", "a$": "AUD", "au$": "AUD", "nz$": "NZD", "hk$": "HKD", "s$": "SGD",
    "mx$": "MXN", "r$": "BRL", "nt$": "TWD",
    "€": "EUR", "euro": "EUR", "euros": "EUR", "£": "GBP", "￡": "GBP", "¥": "JPY", "￥": "JPY",
    "円": "JPY", "元": "CNY", "rmb": "CNY", "cn¥": "CNY", "₹": "INR", "rs": "INR", "₨": "INR",
    "rp": "IDR", "đ": "VND", "₫": "VND", "vnđ": "VND", "tl": "TRY", "₺": "TRY", "ytl": "TRY",
    "zł": "PLN", "zl": "PLN", "kr": "SEK", "kč": "CZK", "₽": "RUB", "руб": "RUB", "р": "RUB",
    "₴": "UAH", "грн": "UAH", "lei": "RON", "ft": "HUF", "fr": "CHF", "sfr": "CHF",
    "r": "ZAR", "₩": "KRW", "원": "KRW", "₪": "ILS", "฿": "THB", "₱": "PHP", "₦": "NGN",
    "лв": "BGN", "kn": "HRK", "rm": "MYR", "kd": "KWD", "din": "RSD", "₸": "KZT", "₾": "GEL",
}  # fmt: skip


def _key(symbol: str) -> str:
    return symbol.strip().lower().rstrip(".").strip()


def _candidates() -> dict[str, frozenset[str]]:
    """Every code each symbol can mean, from price-parser's data and the defaults."""
    found: dict[str, set[str]] = defaultdict(set)
    for code, info in CURRENCIES.items():
        for symbol in (info.get("s"), info.get("sn"), *info.get("sn2", [])):
            if symbol:
                found[_key(symbol)].add(code)
    for symbol, code in _DEFAULTS.items():
        found[symbol].add(code)
    # the dollar family: any "X$" a page prints may be meant by a bare "$"
    found["$"] |= {c for s, codes in found.items() if s.endswith("$") for c in codes}
    found["kr"] |= {"SEK", "NOK", "DKK", "ISK"}
    found["¥"] |= {"CNY"}
    return {symbol: frozenset(codes) for symbol, codes in found.items()}


_CANDIDATES = _candidates()


@lru_cache(maxsize=1024)
def currency_code(symbol: str | None, hint: str | None = None) -> str | None:
    """The ISO 4217 code for ``symbol`` (as printed), given the page's ``hint``; ``None`` when
    neither names a known currency.

    An ISO code (any case) is itself; a symbol only one currency uses is that currency; an
    ambiguous symbol is the hint when the hint is one it can mean, else its default (the
    module's docstring). Without a symbol, the hint alone (``"usd"``, ``"€"``) is used.
    """
    hint_code = currency_code(hint) if hint else None
    if not symbol:
        return hint_code
    key = _key(symbol)
    if not key:
        return hint_code
    if len(key) == 3 and key.isascii() and key.upper() in CURRENCIES:
        return key.upper()
    codes = _CANDIDATES.get(key)
    if not codes:
        return None
    if hint_code in codes:
        return hint_code
    default = _DEFAULTS.get(key)
    if default is not None:
        return default
    return next(iter(codes)) if len(codes) == 1 else None


# the symbols whose currency the page's hint decides: the ones shops of several countries print
# (the other shared symbols, such as "£" for the pound-pegged territories, keep their default)
_HINTED = frozenset({"$", "kr", "¥", "fr", "rs", "₨", "r", "c$"})


def ambiguous(symbol: str) -> bool:
    """Whether the page's hint decides what ``symbol`` means (``$``, ``kr``, ``¥``...)."""
    return _key(symbol) in _HINTED
