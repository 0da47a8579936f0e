"""Jobs over ``input.s3_uri``: the flow streams the object from moto's S3 server."""

from __future__ import annotations

import csv as pycsv
import gzip
import io
import json
from collections.abc import Iterator

import orjson
import pytest

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import JobRow, get_store
from tests.integration.test_scrape_job_flow import _create
from tests.s3server import S3Server
from tests.sites.catalog import Site


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    """The flow's settings point at the moto server (endpoint; credentials from the env)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOAL_S3_ENDPOINT_URL", s3_server.endpoint_url)
        get_settings.cache_clear()
        try:
            yield s3_server
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


async def _run(body: dict) -> JobRow:
    jid = _create(body, "integration-s3")
    # nothing is read at creation: the flow counts the file
    assert get_store(get_settings()).get_job(jid).urls_total is None
    state = await scrape_job(jid, return_state=True)
    row = get_store(get_settings()).get_job(jid)
    assert row is not None
    assert state.is_failed() == (row.status == "failed")  # the flow run ends as the job did
    return row


def _output(row: JobRow) -> bytes:
    return get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()


async def test_ndjson_object_and_role_arn(s3: S3Server, site: Site) -> None:
    bucket = s3.make_bucket()
    lines = [json.dumps(site.url(f"/p/{i}")) for i in range(40)]
    lines[5] = json.dumps({"url": site.url("/p/5"), "meta": {"k": 5}})
    s3.client().put_object(Bucket=bucket, Key="in/urls.ndjson", Body="\n".join(lines).encode())

    row = await _run({"input": {"s3_uri": f"s3://{bucket}/in/urls.ndjson"}, "concurrency": 8})
    assert (row.status, row.urls_total, row.urls_done, row.urls_errored) == ("completed", 40, 40, 0)
    out = [orjson.loads(x) for x in _output(row).splitlines()]
    assert [x["url"] for x in out] == [site.url(f"/p/{i}") for i in range(40)]
    assert out[5]["meta"] == {"k": 5}

    # the same object read with temporary credentials of a role (STS AssumeRole on moto)
    role = "arn:aws:iam::123456789012:role/shoal-reader"
    row = await _run({"input": {"s3_uri": f"s3://{bucket}/in/urls.ndjson", "role_arn": role}})
    assert (row.status, row.urls_done) == ("completed", 40)


async def test_csv_gz_object_with_override_columns(s3: S3Server, site: Site) -> None:
    bucket = s3.make_bucket()
    buf = io.StringIO()
    w = pycsv.writer(buf)
    w.writerow(["url", "selectors"])
    for i in range(10):
        w.writerow([site.url(f"/p/{i}") if i != 3 else "nope", json.dumps({"title": "h1"})])
    s3.client().put_object(
        Bucket=bucket, Key="urls.csv.gz", Body=gzip.compress(buf.getvalue().encode())
    )
    # csv output with no fields in the defaults: the file's selectors column provides them
    body = {"input": {"s3_uri": f"s3://{bucket}/urls.csv.gz"}, "output": {"format": "csv"}}
    row = await _run(body)
    assert (row.status, row.urls_total, row.urls_errored) == ("partial", 10, 1)
    assert row.spec["fields"] == {"title": "string"}
    got = list(pycsv.DictReader(io.StringIO(_output(row).decode())))
    assert [r["title"] for r in got] == [f"Product {i}" if i != 3 else "" for i in range(10)]
    assert (got[3]["status"], got[3]["error_code"], got[3]["url"]) == (
        "error",
        "invalid_url",
        "nope",
    )


async def test_unusable_objects_fail_the_job_saying_why(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.make_bucket()
    c = s3.client()
    c.put_object(Bucket=bucket, Key="words.txt", Body=b"hello\nworld\n")
    c.put_object(Bucket=bucket, Key="cols.csv", Body=b"url,colour\nhttps://e.com,red\n")
    c.put_object(Bucket=bucket, Key="none.csv", Body=b"url,meta\nhttps://e.com,x\n")
    c.put_object(Bucket=bucket, Key="many.ndjson", Body=b"https://e.com/\n" * 4)
    cases = {
        f"s3://{bucket}/missing.ndjson": "no such bucket or object",
        "s3://no-such-bucket-shoal/urls.ndjson": "no such bucket or object",
        f"s3://{bucket}/cols.csv": "unknown column 'colour'",
    }
    for uri, why in cases.items():
        row = await _run({"input": {"s3_uri": uri}})
        assert row.status == "failed" and why in (row.error or ""), (uri, row.error)
        assert uri in row.error and not row.error.startswith("internal error")
        assert row.outputs is None

    # a plain-text list of words: every line is an invalid record, not a failed job
    row = await _run({"input": {"s3_uri": f"s3://{bucket}/words.txt"}})
    assert (row.status, row.urls_total, row.urls_errored) == ("partial", 2, 2)

    # csv output with no fields anywhere: known only once the file is read
    body = {"input": {"s3_uri": f"s3://{bucket}/none.csv"}, "output": {"format": "parquet"}}
    row = await _run(body)
    assert row.status == "failed" and "extract schema or selectors" in row.error

    monkeypatch.setenv("SHOAL_MAX_URLS_PER_JOB", "3")
    get_settings.cache_clear()
    row = await _run({"input": {"s3_uri": f"s3://{bucket}/many.ndjson"}})
    assert row.status == "failed" and "more than 3 URLs" in row.error, row.error
