"""Extraction: selectors, structured data, typed values, and the page formats.

Parse once per page and share it:

    page = Page(html, base_url)
    data = extract_data(page, base_url=base_url, extract=..., selectors=...)
    more = page_formats(page, base_url=base_url, formats=["markdown", "links"])
"""

from ._data import extract_data
from ._formats import page_formats
from ._page import Page
from ._select import parse_selector
from ._values import coerce, parse_number, parse_price

__all__ = [
    "Page",
    "coerce",
    "extract_data",
    "page_formats",
    "parse_number",
    "parse_price",
    "parse_selector",
]
