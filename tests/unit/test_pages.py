"""Page processing inline and in worker processes gives the same result."""

import asyncio

from shoal.pages import PageWorkers, process_page
from tests.sites.catalog import product_html

HTML = product_html(12)
SEL = {"title": "h1", "price": ".price"}


def test_process_page_data_and_formats() -> None:
    out = process_page(HTML, "http://shop.test/p/12", None, SEL, ["data", "links", "metadata"])
    assert out["data"] == {"title": "Product 12", "price": "444,99 €"}
    assert out["links"] == ["http://shop.test/p/13"]
    assert out["metadata"]["title"] == "Product 12 | Catalog"


def test_bad_selector_is_an_error_value_not_an_exception() -> None:
    assert "error" in process_page(HTML, "http://shop.test/", None, {"x": "h1[["}, None)


def test_heavy_formats_in_worker_processes_match_inline() -> None:
    workers = PageWorkers(2)
    inline = PageWorkers(0)
    args = (HTML, "http://shop.test/p/12", {"price": "number"}, None, ["markdown", "text"])

    async def both():  # type: ignore[no-untyped-def]
        return await workers.run(*args), await inline.run(*args)

    try:
        pooled, direct = asyncio.run(both())
    finally:
        workers.shutdown()
    assert pooled == direct
    assert pooled["data"] == {"price": 444.99, "price_currency": "USD"}
    assert "Product 12" in pooled["markdown"] and "Product 12" in pooled["text"]
    assert workers.n == 2
