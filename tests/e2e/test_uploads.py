"""Uploaded URL files as job input, through HTTP only, on the real stack."""

from __future__ import annotations

import csv as pycsv
import gzip
import io
import json

import httpx
import orjson
import polars as pl

from tests.e2e.stack import Stack
from tests.sites.catalog import Site, price_of

FINAL = {"completed", "partial", "cancelled", "failed"}


def _download(job: dict) -> bytes:
    assert job["result_available"] is True, job
    r = httpx.get(job["download_url"], timeout=60)
    assert r.status_code == 200
    return r.content


def test_csv_upload_with_overrides_and_bad_lines_ends_partial(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    # 30 rows: every 5th has its own selectors (title from h1), rows 7 and 21 are not URLs,
    # a blank line sits after row 10 (skipped: not a record)
    buf = io.StringIO()
    w = pycsv.writer(buf, lineterminator="\r\n")
    w.writerow(["url", "meta", "selectors", "timeout_s"])
    bad = {7: "not a url", 21: "ftp://x.example/p"}
    for i in range(30):
        url = bad.get(i, site.url(f"/p/{i}"))
        sel = json.dumps({"title": "h1.name"}) if i % 5 == 0 else ""
        w.writerow([url, json.dumps({"row": i}), sel, "20" if i % 2 else ""])
        if i == 10:
            buf.write("\r\n")
    data = buf.getvalue().encode()
    r = client.post("/v1/uploads", content=data, headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["format"], up["size_bytes"], up["lines"], up["urls_valid"]) == (
        "csv",
        len(data),
        30,
        28,
    )
    # file lines: header is 1, row i is line i + 2 (+1 after the blank line)
    assert up["errors"] == [
        {"line": 9, "msg": "not an http(s) URL"},
        {"line": 24, "msg": "not an http(s) URL"},
    ]
    assert client.get(f"/v1/uploads/{up['id']}").json() == up

    body = {
        "input": {"upload_id": up["id"]},
        "defaults": {"extract": {"price": "number"}},
        "output": {"format": "parquet"},
        "concurrency": 8,
    }
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["urls_total"] == 30
    job = stack.wait_job(client, r.json()["id"], FINAL, timeout=180)
    assert job["status"] == "partial", job
    assert (job["urls_total"], job["urls_done"], job["urls_errored"]) == (30, 30, 2)

    pq = pl.read_parquet(io.BytesIO(_download(job)))
    assert pq["input_index"].to_list() == list(range(30))
    assert [json.loads(m) for m in pq["meta"].to_list()] == [{"row": i} for i in range(30)]
    for i, row in enumerate(pq.iter_rows(named=True)):
        if i in bad:
            assert (row["status"], row["error_code"], row["url"]) == (
                "error",
                "invalid_url",
                bad[i],
            )
            assert row["error_message"] == "not an http(s) URL"
            continue
        assert row["status"] == "ok", row
        assert row["price"] == price_of(i)  # the defaults' extract
        # the per-URL selectors replace the default map: title only on those rows
        assert row["title"] == (f"Product {i}" if i % 5 == 0 else None), row

    # retrying the partial job runs only the two bad lines again, as their own input
    r = client.post(f"/v1/jobs/{job['id']}/retry")
    assert r.status_code == 202 and r.json()["urls_total"] == 2
    retried = stack.wait_job(client, r.json()["id"], FINAL, timeout=120)
    assert (retried["status"], retried["urls_errored"]) == ("partial", 2)


def test_gzip_ndjson_upload_as_multipart_completes(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    lines = [json.dumps(site.url(f"/p/{i}")) for i in range(0, 600, 2)]
    lines += [json.dumps({"url": site.url(f"/p/{i}"), "meta": i}) for i in range(1, 600, 2)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    r = client.post("/v1/uploads", files={"file": ("urls.ndjson.gz", data, "application/gzip")})
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["format"], up["lines"], up["urls_valid"], up["errors"]) == ("ndjson", 600, 600, [])

    r = client.post(
        "/v1/jobs",
        json={"input": {"upload_id": up["id"]}, "selectors": {"name": "h1"}, "concurrency": 32},
    )
    assert r.status_code == 202, r.text
    job = stack.wait_job(client, r.json()["id"], FINAL, timeout=180)
    assert job["status"] == "completed", job
    assert (job["urls_done"], job["urls_errored"]) == (600, 0)
    rows = [orjson.loads(x) for x in _download(job).splitlines()]
    assert [x["data"]["name"] for x in rows[:3]] == ["Product 0", "Product 2", "Product 4"]
    assert rows[300]["meta"] == 1 and rows[300]["url"] == site.url("/p/1")

    # another account sees neither the upload nor may use it
    with stack.client(stack.keys_create("uploads-other")) as other:
        assert other.get(f"/v1/uploads/{up['id']}").status_code == 404
        r = other.post("/v1/jobs", json={"input": {"upload_id": up["id"]}})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "input.upload_id"
