"""S3 end to end: the whole stack with ``SHOAL_RESULTS_URL=s3://...`` on moto's standalone server.

One stack, one test: a job reads its input from an ``s3://`` object (``input.s3_uri``) and
writes its staged input, parts (from the chunk processes) and output to the results bucket; the
results endpoint, a retry (which reads the parts and the staged input back) and the signed
download link that redirects to a presigned S3 URL all work on it.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import polars as pl
import pytest

from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack
from tests.s3server import S3Server
from tests.sites.catalog import Site, price_of

FINAL = {"completed", "partial", "cancelled", "failed"}
SCHEMA = {"name": "string", "price": "number"}


@pytest.fixture(scope="module")
def s3_stack(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    bucket = s3_server.make_bucket()
    env = {
        **E2E_ENV,
        **s3_server.env(),
        "SHOAL_RESULTS_URL": f"s3://{bucket}/shoal",
        # several chunks, so the chunk processes write parts too
        "SHOAL_CHUNK_MIN_URLS": "50",
        "SHOAL_CHUNK_PROCESSES": "2",
    }
    s = Stack(tmp_path_factory.mktemp("s3stack") / "data", **env).start()
    try:
        yield s, bucket
    finally:
        s.stop()


def _keys(s3_server: S3Server, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in (
        s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def _download(job: dict, s3_server: S3Server) -> bytes:
    """Follow the job's signed link: Shoal answers 307 to a presigned URL of the moto server."""
    link = job["download_url"]
    assert link.startswith("http://127.0.0.1:") and "/v1/downloads/" in link
    first = httpx.get(link, follow_redirects=False, timeout=60)  # no API key
    assert first.status_code == 307, first.text
    assert first.headers["location"].startswith(s3_server.endpoint_url + "/")
    assert "X-Amz-Signature=" in first.headers["location"]
    r = httpx.get(link, follow_redirects=True, timeout=60)
    assert r.status_code == 200
    return r.content


def test_results_on_s3_with_presigned_downloads(
    s3_stack: tuple[Stack, str], s3_server: S3Server, site: Site
) -> None:
    stack, bucket = s3_stack
    n_ok, n_bad = 300, 6
    urls = [site.url(f"/p/{i}") for i in range(n_ok)] + [
        site.url(f"/status/404/{i}") for i in range(n_bad)
    ]
    # the input is an object in another bucket of the same S3 server
    in_bucket = s3_server.make_bucket()
    listing = b"".join(
        orjson.dumps({"url": u, "meta": {"k": i}}) + b"\n" for i, u in enumerate(urls)
    )
    s3_server.client().put_object(Bucket=in_bucket, Key="lists/catalog.ndjson", Body=listing)
    with stack.client() as client:
        r = client.post(
            "/v1/jobs",
            json={
                "input": {"s3_uri": f"s3://{in_bucket}/lists/catalog.ndjson"},
                "defaults": {"extract": SCHEMA},
                "concurrency": 32,
                "output": {"format": "parquet"},
            },
        )
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        job = stack.wait_job(client, jid, FINAL, timeout=300)
        assert job["status"] == "partial", job
        assert (job["urls_total"], job["urls_done"], job["urls_errored"]) == (306, 306, n_bad)

        # every file of the job is in the bucket: staged input, one part per chunk, the output
        keys = _keys(s3_server, bucket, f"shoal/jobs/{jid}/")
        assert f"shoal/jobs/{jid}/input.ndjson" in keys
        parts = [k for k in keys if k.startswith(f"shoal/jobs/{jid}/parts/")]
        assert len(parts) >= 3 and all(k.endswith(".parquet") for k in parts)
        assert f"shoal/jobs/{jid}/output/result.parquet" in keys
        assert not [k for k in keys if ".tmp-" in k or ".build-" in k]

        # the signed link redirects to a presigned URL; the file's rows are the job's
        out = pl.read_parquet(io.BytesIO(_download(job, s3_server)))
        assert out["url"].to_list() == urls
        assert out["input_index"].to_list() == list(range(306))
        assert out["price"].to_list()[:n_ok] == [price_of(i) for i in range(n_ok)]
        assert out["error_code"].to_list()[n_ok:] == ["http_4xx"] * n_bad
        assert [orjson.loads(m) for m in out["meta"].to_list()] == [{"k": i} for i in range(306)]

        # results endpoint, paged and whole, read from the parts in the bucket
        page = client.get(f"/v1/jobs/{jid}/results", params={"limit": 5, "offset": 298}).json()
        assert page["total"] == 306
        assert [x["input_index"] for x in page["results"]] == [298, 299, 300, 301, 302]
        assert page["results"][0]["data"] == {
            "name": "Product 298",
            "price": price_of(298),
            "price_currency": "USD",  # the JSON-LD priceCurrency
        }
        csv = client.get(f"/v1/jobs/{jid}/results", params={"format": "csv"})
        assert csv.status_code == 200
        assert pl.read_csv(io.BytesIO(csv.content))["url"].to_list() == urls

        # retry: the errored URLs come back from the parts and staged input in the bucket
        r = client.post(f"/v1/jobs/{jid}/retry")
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        retried = stack.wait_job(client, rid, FINAL, timeout=120)
        assert (retried["urls_total"], retried["urls_errored"]) == (n_bad, n_bad)
        again = pl.read_parquet(io.BytesIO(_download(retried, s3_server)))
        assert again["url"].to_list() == urls[n_ok:]

        # a second job in another format; the link of an object removed from the bucket is 410
        r = client.post(
            "/v1/jobs",
            json={"input": {"urls": urls[:20]}, "output": {"format": "ndjson", "gzip": True}},
        )
        small = stack.wait_job(client, r.json()["id"], FINAL, timeout=120)
        assert small["status"] == "completed"
        lines = [orjson.loads(x) for x in gzip.decompress(_download(small, s3_server)).splitlines()]
        assert [x["url"] for x in lines] == urls[:20]
        key = f"shoal/jobs/{small['id']}/output/result.ndjson.gz"
        assert urlsplit(small["download_url"]).path.endswith("/result.ndjson.gz")
        s3_server.client().delete_object(Bucket=bucket, Key=key)
        gone = httpx.get(small["download_url"], follow_redirects=False)
        assert gone.status_code == 410
        assert gone.headers["content-type"] == "application/problem+json"
    assert Path(stack.data_dir, "results").exists() is False  # nothing went to the local disk
