"""Conditional fetch (``shoal.conditional``) on chunks run in the test process, against the
nightly catalog site: the request headers a conditional job sends, what a 304 row holds, and the
cases where nothing is asked conditionally or a 304 cannot be carried forward."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pyarrow.parquet as pq
import pytest

from shoal import conditional, jobs
from shoal.chunking import plan_chunks
from shoal.contract import CompareSpec, JobCreate, JobSpec
from shoal.output import build_output, iter_part_batches, part_urls, read_results
from shoal.scrape import JobRuntime, scrape_chunk
from shoal.settings import Settings, get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.sites.catalog import CATALOG_EXTRACT, CATALOG_SELECTORS, NightlyCatalog


@pytest.fixture
def env(settings, monkeypatch) -> Settings:
    monkeypatch.setenv("SHOAL_ALLOW_PRIVATE_NETWORKS", "1")
    monkeypatch.setenv("SHOAL_PARSE_WORKERS", "0")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def shop() -> Iterator[NightlyCatalog]:
    site = NightlyCatalog(12, validators="mixed").start()
    try:
        yield site
    finally:
        site.stop()


def _defaults(**more: Any) -> dict[str, Any]:
    return {"extract": CATALOG_EXTRACT, "selectors": CATALOG_SELECTORS, **more}


async def _run(
    settings: Settings,
    urls: list[Any],
    *,
    previous: str | None = None,
    defaults: dict[str, Any] | None = None,
    before_chunk: Callable[[str, str], None] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Stage a job of one chunk (conditional on ``previous`` when given), scrape it in this
    process; its id and result rows (as the results API reads them)."""
    store, storage = get_store(settings), get_storage(settings)
    account, _ = store.get_or_create_account("cond")
    req = JobCreate.model_validate({"urls": urls, "defaults": defaults or _defaults()})
    spec, items = jobs.validate(req, settings, account)
    if previous is not None:  # what a schedule's run gets (the API takes it on schedules)
        spec = spec.model_copy(
            update={"conditional": True, "compare": CompareSpec(previous_job_id=previous)}
        )
    row = jobs.new_job_row(req, spec, account, urls_total=len(items))
    jobs.stage_inline(storage, row.id, items)
    store.insert_job(row)
    in_url = jobs.input_url(storage, row.id)
    [chunk], _ = plan_chunks(storage, in_url, settings, size=len(urls))
    if before_chunk is not None:
        before_chunk(row.id, in_url)
    rt = JobRuntime.open(row.id, JobSpec.model_validate(row.spec), settings)
    try:
        summary = await scrape_chunk(rt, in_url, chunk)
    finally:
        await rt.close()
    assert summary.complete
    rows, total = read_results(storage, part_urls(storage, row.id), limit=1000, offset=0)
    assert total == len(urls)
    return row.id, rows


async def test_a_conditional_run_asks_with_last_nights_validators(env, shop) -> None:
    urls = [*shop.urls(), shop.url("/product/SKU-999999")]  # the last one errors (404)
    first, night1 = await _run(env, urls)
    assert shop.counts(1).conditional == 0 and shop.counts(1).full == 12
    # every ok row keeps its response's validators in the part files (internal columns)
    cols = ["input_index", "etag", "last_modified"]
    kept = iter_part_batches(get_storage(env), part_urls(get_storage(env), first), cols)
    stored = {i: (e, m) for b in kept for i, e, m in zip(*b.to_pydict().values(), strict=True)}
    seen = {}
    for i, url in enumerate(urls[:-1]):
        etag, modified = stored[i]
        assert (etag is not None, modified is not None) == _kinds(shop, url), url
        seen[url] = (etag, modified)
    assert stored[12] == (None, None)

    repriced = sorted(shop.products)[3]  # SKU-000004: both validators
    shop.next_night(reprice=[repriced])
    second, night2 = await _run(env, urls, previous=first)

    sent = {h.path: h for h in shop.hits if h.night == 2}
    for url in urls[:-1]:
        hit = sent[url.removeprefix(shop.url(""))]
        assert (hit.if_none_match, hit.if_modified_since) == seen[url], url
    assert sent["/product/SKU-999999"].if_none_match is None  # its row errored: asked plainly
    assert sent["/product/SKU-999999"].if_modified_since is None
    asked = sum(1 for v in seen.values() if v != (None, None))
    counts = shop.counts(2)
    assert counts.conditional == asked == 9  # 3 of 12 products send no validator
    assert counts.not_modified == asked - 1 and counts.full == 12 - counts.not_modified

    for before, after in zip(night1, night2, strict=True):
        url = after["url"]
        if url == shop.product_url(repriced) or url == urls[-1] or seen[url] == (None, None):
            assert after.get("not_modified") is None
            assert after["credits"] == 1  # a 404 is charged as any answer is
            continue
        assert after["not_modified"] is True and after["http_status"] == 304
        assert after["status"] == "ok" and after["credits"] == 0 and after["error"] is None
        assert after["data"] == before["data"] == shop.data()[url.rsplit("/", 1)[1]]
        assert after["content_hash"] == before["content_hash"]
    got = {r["url"]: r for r in night2}
    assert got[shop.product_url(repriced)]["data"] == shop.data()[repriced]
    assert (
        got[shop.product_url(repriced)]["data"]
        != {r["url"]: r for r in night1}[shop.product_url(repriced)]["data"]
    )

    # night 3: the 304 rows kept their validators, so they are asked again
    shop.next_night()
    _, night3 = await _run(env, urls, previous=second)
    assert shop.counts(3).not_modified == asked
    assert sum(bool(r.get("not_modified")) for r in night3) == asked


def _kinds(shop: NightlyCatalog, url: str) -> tuple[bool, bool]:
    kind = shop._validators_of(shop.products[url.rsplit("/", 1)[1]])
    return kind in ("both", "etag"), kind in ("both", "last_modified")


async def test_rows_are_found_by_url_when_the_input_changed_order(env, shop) -> None:
    urls = shop.urls()
    first, night1 = await _run(env, urls)
    shop.next_night(add=1)
    shuffled = [shop.urls()[-1], *reversed(urls)]
    _, night2 = await _run(env, shuffled, previous=first)
    before = {r["url"]: r for r in night1}
    for row in night2:
        if row.get("not_modified"):
            assert row["data"] == before[row["url"]]["data"]
            assert row["data"]["sku"] == row["url"].rsplit("/", 1)[1]
    assert sum(bool(r.get("not_modified")) for r in night2) == shop.counts(2).not_modified == 9


async def test_other_fields_than_last_night_ask_nothing_conditionally(env, shop) -> None:
    first, _ = await _run(env, shop.urls())
    shop.next_night()
    other = _defaults(extract={**CATALOG_EXTRACT, "brand": "string"})
    second, rows = await _run(env, shop.urls(), previous=first, defaults=other)
    assert shop.counts(2).conditional == 0 and shop.counts(2).full == 12
    assert not any(r.get("not_modified") for r in rows)
    assert conditional.prepare(get_storage(env), second, "unused", first) == 0  # an empty plan


async def test_a_304_whose_previous_row_is_gone_is_fetched_again(env, shop) -> None:
    first, _ = await _run(env, shop.urls())
    storage = get_storage(env)

    def plan_then_lose_the_previous_rows(job_id: str, in_url: str) -> None:
        spec = JobSpec.model_validate(get_store(env).get_job(job_id).spec)  # type: ignore[union-attr]
        assert conditional.prepare_job(storage, get_store(env), job_id, spec, in_url) == 9
        for url in part_urls(storage, first):  # retention, between plan and chunk
            storage.rm(url)

    shop.next_night()
    _, rows = await _run(
        env, shop.urls(), previous=first, before_chunk=plan_then_lose_the_previous_rows
    )
    counts = shop.counts(2)
    assert counts.not_modified == 9 and counts.full == 12  # each 304 was asked again plainly
    assert not any(r.get("not_modified") for r in rows)
    assert [r["data"] for r in rows] == [shop.data()[s] for s in sorted(shop.products)]
    assert all(r["credits"] == 1 for r in rows)


async def test_previous_job_without_results_asks_nothing(env, shop) -> None:
    first, _ = await _run(env, shop.urls())
    storage = get_storage(env)
    for url in part_urls(storage, first):
        storage.rm(url)
    shop.next_night()
    _, rows = await _run(env, shop.urls(), previous=first)
    assert shop.counts(2).conditional == 0
    assert all(r["http_status"] == 200 for r in rows)


async def test_a_304_to_validators_not_ours_is_an_error_row(env, shop) -> None:
    url = shop.product_url(sorted(shop.products)[3])  # sends ETag and Last-Modified
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        resp.read()
        etag = resp.getheader("etag")
    finally:
        conn.close()
    assert etag
    # a plain job whose caller sends their own If-None-Match: no previous row to carry
    _, [got] = await _run(env, [url], defaults=_defaults(headers={"If-None-Match": etag}))
    assert shop.hits[-1].status == 304 and shop.hits[-1].if_none_match == etag
    assert got["status"] == "error" and got["http_status"] == 304
    assert got["error"]["code"] == "http_304" and got["credits"] == 1
    assert got.get("not_modified") is None and got["data"] is None


async def test_the_output_shows_not_modified_and_never_the_validators(env, shop) -> None:
    first, _ = await _run(env, shop.urls())
    shop.next_night(reprice=1)
    second, _ = await _run(env, shop.urls(), previous=first)
    storage = get_storage(env)
    parts = part_urls(storage, second)
    [nd] = build_output(storage, parts, storage.url("o1"), fmt="ndjson", gzip=False, fields={})
    with storage.open(nd.url, "rb") as fh:
        lines = [orjson.loads(line) for line in fh]
    assert sum(line.get("not_modified") is True for line in lines) == shop.counts(2).not_modified
    assert all("not_modified" not in line for line in lines if line["http_status"] == 200)
    assert not any("etag" in line or "last_modified" in line for line in lines)
    [pq_out] = build_output(
        storage, parts, storage.url("o2"), fmt="parquet", gzip=False, fields=CATALOG_EXTRACT
    )
    names = pq.read_schema(storage.local_path(pq_out.url)).names
    assert "etag" not in names and "last_modified" not in names


async def test_a_previous_row_is_carried_only_for_its_own_url(env, shop) -> None:
    first, night1 = await _run(env, shop.urls())
    cond = conditional.Conditional(get_storage(env), "job_unused", first)

    def asks(*prev: int) -> conditional.ChunkAsks:
        out = conditional.ChunkAsks(cond)
        out.update({n: conditional.Validators('"x"', None, p) for n, p in enumerate(prev)})
        return out

    both = asks(2, 5)
    row = both.previous_row(2, night1[2]["url"])
    assert row is not None and row["data"] == night1[2]["data"]
    assert row["content_hash"] == night1[2]["content_hash"]
    assert both.previous_row(5, night1[5]["url"])["data"] == night1[5]["data"]  # type: ignore[index]
    # the plan matches URLs by 64-bit hash: a row of another URL is never carried
    assert asks(2).previous_row(2, night1[3]["url"]) is None
    assert asks(10_000).previous_row(10_000, night1[2]["url"]) is None  # no such row


async def test_a_site_without_validators_is_asked_plainly(env) -> None:
    site = NightlyCatalog(5, validators="none").start()
    try:
        first, _ = await _run(env, site.urls())
        site.next_night()
        second, rows = await _run(env, site.urls(), previous=first)
    finally:
        site.stop()
    assert conditional.prepare(get_storage(env), second, "unused", first) == 0  # its plan
    assert site.counts(2).conditional == 0 and site.counts(2).full == 5
    assert all(r["http_status"] == 200 and r["credits"] == 1 for r in rows)
