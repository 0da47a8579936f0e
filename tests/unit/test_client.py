"""``shoal.client.Client`` against the real stack (``shoal up``: Prefect server, worker, API on
127.0.0.1) and the catalog site: jobs submitted inline and from uploaded files run to their end,
``wait`` reports counters that never go backwards, results page through in input order,
downloads hold the true values, and the API's errors arrive as ``ShoalError`` with their
fields."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from shoal.client import AsyncClient, Client, Job, ShoalError
from tests.e2e.stack import Stack
from tests.sites.catalog import Site, price_of

pytestmark = pytest.mark.e2e

SCHEMA = {"name": "string", "price": "number"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # output over 40 kB is split into parts (one test downloads them); the others stay below
    s = Stack(tmp_path_factory.mktemp("stack") / "data", SHOAL_MAX_PART_BYTES="40000").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def shoal(stack: Stack) -> Iterator[Client]:
    with Client(stack.base, stack.key) as c:
        yield c


def _check_rows(rows: list[dict], numbers: list[int | None]) -> None:
    """Row i is product ``numbers[i]`` (``None``: a 404 page, errored)."""
    assert len(rows) == len(numbers)
    for row, n in zip(rows, numbers, strict=True):
        if n is None:
            assert row["status"] == "error"
        else:
            assert row["status"] == "ok", row
            assert (row["name"], float(row["price"])) == (f"Product {n}", price_of(n))


def test_inline_job_waited_paged_and_downloaded(shoal: Client, site: Site, tmp_path: Path) -> None:
    numbers: list[int | None] = [*range(25), None, None]
    urls = [site.url(f"/p/{n}") if n is not None else site.url("/status/404/1") for n in numbers]
    job = shoal.submit(urls, extract=SCHEMA, format="csv", name="client-inline")
    assert (job.status, job.urls_total, job.name) == ("queued", 27, "client-inline")
    seen: list[Job] = []
    done = shoal.wait(job.id, on_progress=seen.append, poll=0.2)
    assert done.status == "partial" and (done.urls_done, done.urls_errored) == (27, 2)
    assert seen[-1] == done and all(not j.final for j in seen[:-1])
    counters = [(j.urls_done, j.urls_errored) for j in seen]
    assert counters == sorted(counters)  # never backwards

    rows = list(shoal.results(job.id, page_size=4))  # 7 pages
    assert [r.input_index for r in rows] == list(range(27))
    _check_rows([{"status": r.status, **(r.data or {})} for r in rows], numbers)
    assert {r.error.code for r in rows if r.error} == {"http_4xx"}

    saved = shoal.download(done, tmp_path / "out.csv")
    assert saved == [tmp_path / "out.csv"]
    _check_rows(list(csv.DictReader(io.StringIO(saved[0].read_text()))), numbers)
    assert not list(tmp_path.glob(".*tmp"))  # written whole, then renamed


def test_a_file_is_uploaded_then_run(shoal: Client, site: Site, tmp_path: Path) -> None:
    plain = tmp_path / "urls.txt"  # one bare URL a line
    plain.write_text("".join(site.url(f"/p/{n}") + "\n" for n in range(40, 52)))
    job = shoal.submit(file=plain, extract=SCHEMA, format="parquet")
    done = shoal.wait(job.id, poll=0.2)
    assert done.status == "completed" and done.urls_done == 12
    out = shoal.download(done.id, tmp_path / "out.parquet")[0]
    _check_rows(pl.read_parquet(out).to_dicts(), list(range(40, 52)))

    packed = tmp_path / "urls.csv.gz"  # a CSV with a url column, gzip-compressed
    body = "url,timeout_s\n" + "".join(f"{site.url(f'/p/{n}')},10\n" for n in range(7))
    packed.write_bytes(gzip.compress(body.encode()))
    upload = shoal.upload(packed)
    assert (upload.format, upload.lines, upload.urls_valid, upload.errors) == ("csv", 7, 7, [])
    assert shoal.get_upload(upload.id).id == upload.id
    done = shoal.wait(shoal.submit(upload_id=upload.id, extract=SCHEMA).id, poll=0.2)
    assert done.status == "completed"
    rows = [{"status": r.status, **(r.data or {})} for r in shoal.results(done.id)]
    _check_rows(rows, list(range(7)))


def test_errors_are_shoal_errors_naming_the_fields(shoal: Client, stack: Stack) -> None:
    with pytest.raises(ShoalError) as caught:
        shoal.submit(["http://127.0.0.1/x"], extract={"price": "money"}, concurrency=0)
    e = caught.value
    assert e.status == 422
    assert {f.loc for f in e.errors} >= {"defaults.extract.price", "concurrency"}
    with pytest.raises(ShoalError) as caught:
        shoal.get("job_doesnotexist")
    assert caught.value.status == 404
    with Client(stack.base, "not-a-key") as stranger, pytest.raises(ShoalError) as caught:
        stranger.list()
    assert caught.value.status == 401


def test_list_cancel_and_retry(shoal: Client, site: Site) -> None:
    urls = [site.url("/p/1"), site.url("/status/404/2"), site.url("/status/404/3")]
    parent = shoal.wait(shoal.submit(urls).id, poll=0.2)
    assert parent.status == "partial"
    listed = shoal.list(["partial", "completed"], limit=100)
    assert parent.id in {j.id for j in listed.jobs}
    assert all(j.status in ("partial", "completed") for j in listed.jobs)
    assert shoal.list("queued", limit=100).jobs == []

    with pytest.raises(ShoalError) as caught:
        shoal.cancel(parent.id)
    assert caught.value.status == 409  # it has ended

    child = shoal.retry(parent.id)
    assert child.urls_total == 2
    retried = shoal.wait(child.id, poll=0.2)
    assert retried.parent_job_id == parent.id and retried.urls_errored == 2

    slow = shoal.submit([site.url(f"/slow/{n}?ms=3000") for n in range(40)], concurrency=1)
    cancelled = shoal.cancel(slow.id)
    assert cancelled.cancel_requested_at is not None
    assert shoal.wait(slow.id, poll=0.2).status == "cancelled"


async def test_the_async_client_end_to_end(stack: Stack, site: Site, tmp_path: Path) -> None:
    plain = tmp_path / "urls.ndjson"
    plain.write_text("".join(f'"{site.url(f"/p/{n}")}"\n' for n in range(100, 110)))
    seen: list[int] = []
    async with AsyncClient(stack.base, stack.key) as shoal:
        job = await shoal.submit(file=plain, extract=SCHEMA, format="csv", gzip=True)
        done = await shoal.wait(job.id, on_progress=lambda j: seen.append(j.urls_done), poll=0.2)
        assert done.status == "completed" and seen[-1] == 10 and seen == sorted(seen)
        rows = [r async for r in shoal.results(done.id, page_size=3)]
        _check_rows([{"status": r.status, **(r.data or {})} for r in rows], list(range(100, 110)))
        (saved,) = await shoal.download(done, tmp_path / "out.csv.gz")
        listed = await shoal.list("completed", limit=100)
    text = gzip.decompress(saved.read_bytes()).decode()
    _check_rows(list(csv.DictReader(io.StringIO(text))), list(range(100, 110)))
    assert done.id in {j.id for j in listed.jobs}


def test_an_output_in_parts_downloads_every_part(shoal: Client, site: Site, tmp_path: Path) -> None:
    n = 400
    done = shoal.wait(shoal.submit([site.url(f"/p/{i}") for i in range(n)]).id, poll=0.2)
    assert done.status == "completed" and done.download_parts and len(done.download_parts) > 1
    saved = shoal.download(done, tmp_path / "all.ndjson")
    assert saved[:2] == [tmp_path / "all.ndjson", tmp_path / "all.part2.ndjson"]
    assert len(saved) == len(done.download_parts)
    indexes = []
    for path, part in zip(saved, done.download_parts, strict=True):
        lines = path.read_text().splitlines()
        assert len(lines) == part.rows and path.stat().st_size == part.size_bytes
        indexes += [json.loads(line)["input_index"] for line in lines]
    assert indexes == list(range(n))
