"""Storage and output files on S3: moto's standalone server on 127.0.0.1 is the endpoint."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest

from shoal import downloads
from shoal.output import build_output, count_rows, read_results, stream_output, write_part
from shoal.settings import Settings, get_settings
from shoal.storage import Storage, get_storage
from shoal.store import get_store, utcnow
from tests.s3server import REGION
from tests.unit.test_output import _parts

FIELDS = {"name": "string", "price": "number", "stock": "integer"}


@pytest.fixture
def bucket(s3_server) -> str:
    return s3_server.make_bucket()


@pytest.fixture
def storage(s3_server, bucket) -> Storage:
    settings = Settings(
        results_url=f"s3://{bucket}/shoal",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=REGION,
        signing_secret="x",
    )
    return get_storage(settings)


def _keys(s3_server, bucket: str, prefix: str = "") -> list[str]:
    """Keys in the bucket, asked through boto3 (not through the Storage under test)."""
    got = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in got.get("Contents", []))


def _get(s3_server, bucket: str, key: str) -> bytes:
    return s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _row(i: int) -> dict:
    ok = i % 5 != 2
    return {
        "url": f"https://store.test/p/{i}",
        "input_index": i,
        "status": "ok" if ok else "error",
        "http_status": 200 if ok else None,
        "final_url": f"https://store.test/p/{i}" if ok else None,
        "fetched_at": "2026-05-12T22:00:14Z",
        "elapsed_ms": 10 + i,
        "attempts": 1,
        "credits": 1,
        "content_hash": f"sha256:{i:04x}" if ok else None,
        "meta": {"sku": i} if i % 3 == 0 else None,
        "data": {"name": f"Product {i}", "price": 1.5 + i, "stock": i} if ok else None,
        "error": None if ok else {"code": "timeout", "message": "slow"},
    }


def test_storage_operations_on_s3(storage, s3_server, bucket, tmp_path):
    assert not storage.is_local
    assert storage.root == f"s3://{bucket}/shoal"
    url = storage.url("jobs", "j", "parts", "000001.parquet")
    assert url == f"s3://{bucket}/shoal/jobs/j/parts/000001.parquet"
    assert storage.local_path(url) is None

    storage.write_bytes_atomic(url, b"one")
    storage.write_bytes_atomic(url, b"second")
    assert _get(s3_server, bucket, "shoal/jobs/j/parts/000001.parquet") == b"second"
    assert _keys(s3_server, bucket) == ["shoal/jobs/j/parts/000001.parquet"]  # no temp object
    assert storage.exists(url) and storage.size(url) == 6
    with storage.open(url) as fh:
        assert fh.read() == b"second"

    local = tmp_path / "built.csv"
    local.write_bytes(b"a,b\n1,2\n")
    out = storage.url("jobs", "j", "output", "result.csv")
    storage.put_file(str(local), out)
    assert _get(s3_server, bucket, "shoal/jobs/j/output/result.csv") == b"a,b\n1,2\n"

    with storage.open(storage.url("jobs", "j", "parts", "000002.parquet"), "wb") as fh:
        fh.write(b"written through open")
    storage.write_bytes_atomic(storage.url("jobs", "j", "parts", "notes.txt"), b"x")
    parts = storage.url("jobs", "j", "parts")
    assert storage.list(parts) == [
        f"{parts}/000001.parquet",
        f"{parts}/000002.parquet",
        f"{parts}/notes.txt",
    ]
    assert storage.glob(f"{parts}/*.parquet") == [
        f"{parts}/000001.parquet",
        f"{parts}/000002.parquet",
    ]
    assert storage.list(storage.url("jobs", "missing")) == []
    assert not storage.exists(storage.url("jobs", "missing", "x"))

    storage.rm(f"{parts}/notes.txt")
    storage.rm(f"{parts}/notes.txt")  # missing is fine
    assert not storage.exists(f"{parts}/notes.txt")
    storage.rm(storage.url("jobs", "j"), recursive=True)
    assert _keys(s3_server, bucket) == []
    assert storage.list(parts) == []


def test_listing_sees_objects_another_process_wrote(storage, s3_server, bucket):
    """The API lists parts the worker keeps adding: no listing may come from a cache."""
    parts = storage.url("jobs", "j", "parts")
    assert storage.list(parts) == []
    assert not storage.exists(f"{parts}/000000.parquet")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="shoal/jobs/j/parts/000000.parquet", Body=b"a")
    assert storage.list(parts) == [f"{parts}/000000.parquet"]
    assert storage.exists(f"{parts}/000000.parquet")
    client.put_object(Bucket=bucket, Key="shoal/jobs/j/parts/000001.parquet", Body=b"bb")
    assert storage.list(parts) == [f"{parts}/000000.parquet", f"{parts}/000001.parquet"]
    assert storage.size(f"{parts}/000001.parquet") == 2
    client.delete_object(Bucket=bucket, Key="shoal/jobs/j/parts/000000.parquet")
    assert storage.list(parts) == [f"{parts}/000001.parquet"]


@pytest.mark.parametrize(
    ("fmt", "gzip_", "name"),
    [
        ("ndjson", True, "result.ndjson.gz"),
        ("ndjson", False, "result.ndjson"),
        ("csv", False, "result.csv"),
        ("parquet", False, "result.parquet"),
    ],
)
def test_build_output_to_s3(storage, s3_server, bucket, fmt, gzip_, name):
    rows = [_row(i) for i in range(45)]
    parts = _parts(storage, rows, 10)
    dest = storage.url("jobs", "j1", "output")
    [f] = build_output(storage, parts, dest, fmt=fmt, gzip=gzip_, fields=FIELDS)
    assert f.url == f"{dest}/{name}" and f.rows == 45
    blob = _get(s3_server, bucket, f"shoal/jobs/j1/output/{name}")
    assert f.size_bytes == len(blob)
    if fmt == "ndjson":
        text = gzip.decompress(blob) if gzip_ else blob
        assert [json.loads(line) for line in text.splitlines()] == rows
    elif fmt == "csv":
        got = list(csv.DictReader(io.StringIO(blob.decode())))
        assert [int(r["input_index"]) for r in got] == list(range(45))
        assert got[1]["name"] == "Product 1" and float(got[1]["price"]) == 2.5
        assert got[2]["error_code"] == "timeout" and got[2]["name"] == ""
    else:
        t = pq.read_table(io.BytesIO(blob))
        assert t.column("input_index").to_pylist() == list(range(45))
        assert t.column("stock").to_pylist()[:3] == [0, 1, None]
    # no build leftovers next to the output; the parts stay
    assert _keys(s3_server, bucket, "shoal/jobs/j1/output/") == [f"shoal/jobs/j1/output/{name}"]
    assert rows == [r for r in read_results(storage, parts, limit=100, offset=0)[0]]
    assert count_rows(storage, parts) == (45, 9)


def test_split_output_replaces_earlier_result(storage, s3_server, bucket):
    rows = [_row(i) for i in range(200)]
    parts = _parts(storage, rows, 50)
    dest = storage.url("jobs", "j1", "output")
    build_output(storage, parts, dest, fmt="ndjson", gzip=False, fields={})
    files = build_output(
        storage, parts, dest, fmt="ndjson", gzip=False, fields={}, max_part_bytes=20_000
    )
    assert len(files) > 1 and sum(f.rows for f in files) == 200
    keys = _keys(s3_server, bucket, "shoal/jobs/j1/output/")
    assert keys == [f"shoal/jobs/j1/output/result-{i:05d}.ndjson" for i in range(1, len(files) + 1)]
    got = []
    for key in keys:
        got += [json.loads(x) for x in _get(s3_server, bucket, key).splitlines()]
    assert got == rows


def test_results_read_while_parts_arrive(storage):
    rows = [_row(i) for i in range(30)]
    parts = _parts(storage, rows[:10], 10)
    page, total = read_results(storage, parts, limit=5, offset=3)
    assert total == 10 and page == rows[3:8]
    parts = _parts(storage, rows, 10)
    page, total = read_results(
        storage, storage.list(storage.url("jobs", "j1", "parts")), limit=5, offset=25
    )
    assert total == 30 and page == rows[25:30]
    streamed = b"".join(stream_output(storage, parts, fmt="ndjson", fields={}))
    assert [json.loads(x) for x in streamed.splitlines()] == rows
    blob = b"".join(stream_output(storage, parts, fmt="parquet", fields=FIELDS))
    assert pq.read_table(io.BytesIO(blob)).column("input_index").to_pylist() == list(range(30))


def test_presign_downloads_with_plain_httpx(storage, s3_server, tmp_path):
    url = storage.url("jobs", "j", "output", "result.csv")
    storage.write_bytes_atomic(url, b"a,b\n1,2\n")
    signed = storage.presign(url, 600, filename="result.csv", media_type="text/csv")
    assert signed is not None and signed.startswith(s3_server.endpoint_url)
    r = httpx.get(signed)
    assert r.status_code == 200 and r.content == b"a,b\n1,2\n"
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="result.csv"'
    # SigV4 (buckets made since 2020 refuse SigV2 links), expiry as asked, at most 7 days
    query = parse_qs(urlsplit(signed).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["600"]
    longest = parse_qs(urlsplit(storage.presign(url, 10**9) or "").query)
    assert longest["X-Amz-Expires"] == [str(7 * 24 * 3600)]
    assert Storage(str(tmp_path)).presign(str(tmp_path / "x"), 600) is None


# --- the API on S3 results: signed links redirect to presigned URLs ---------------------------


@pytest.fixture
def s3_settings(settings, monkeypatch, s3_server, bucket):
    """The unit ``settings`` (tmp data dir) with results on the moto bucket."""
    monkeypatch.setenv("SHOAL_RESULTS_URL", f"s3://{bucket}/shoal")
    monkeypatch.setenv("SHOAL_S3_ENDPOINT_URL", s3_server.endpoint_url)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def s3_job(s3_settings, alice, make_job):
    """A finished job whose parts and ndjson output are in the bucket."""
    storage = get_storage(s3_settings)
    job = make_job(alice.account, status="running", urls_total=25)
    rows = [_row(i) for i in range(25)]
    for p in range(0, 25, 10):
        write_part(
            storage,
            storage.url("jobs", job.id, "parts", f"{p // 10:06d}.parquet"),
            rows[p : p + 10],
        )
    [f] = build_output(
        storage,
        storage.list(storage.url("jobs", job.id, "parts")),
        storage.url("jobs", job.id, "output"),
        fmt="ndjson",
        gzip=False,
        fields={},
    )
    get_store(s3_settings).finish(
        job.id,
        "completed",
        urls_done=25,
        urls_errored=5,
        credits_used=25,
        error=None,
        outputs=[
            {"name": "result.ndjson", "url": f.url, "rows": f.rows, "size_bytes": f.size_bytes}
        ],
        output_expires_at=utcnow() + timedelta(hours=2),
    )
    return job, rows


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_download_link_redirects_to_presigned_url(
    client, alice, s3_job, s3_settings, s3_server, bucket, monkeypatch
):
    job, rows = s3_job
    body = client.get(f"/v1/jobs/{job.id}", headers=alice.headers).json()
    assert body["result_available"] is True
    link = body["download_url"]
    assert urlsplit(link).path == f"/v1/downloads/{job.id}/result.ndjson"  # Shoal's own link

    r = client.get(_path_and_query(link), follow_redirects=False)  # no API key
    assert r.status_code == 307, r.text
    target = r.headers["location"]
    assert target.startswith(f"{s3_server.endpoint_url}/{bucket}/shoal/jobs/{job.id}/output/")
    assert 3590 <= int(parse_qs(urlsplit(target).query)["X-Amz-Expires"][0]) <= 3600
    got = httpx.get(target)
    assert got.status_code == 200
    assert [json.loads(x) for x in got.content.splitlines()] == rows
    assert got.headers["content-disposition"] == 'attachment; filename="result.ndjson"'

    # a link about to expire gets a presigned URL that expires with it
    soon = downloads.sign(s3_settings, job.id, "result.ndjson", utcnow() + timedelta(seconds=60))
    r = client.get(_path_and_query(soon), follow_redirects=False)
    assert r.status_code == 307
    assert 0 < int(parse_qs(urlsplit(r.headers["location"]).query)["X-Amz-Expires"][0]) <= 60

    # SHOAL_PRESIGN_TTL_S=0: the API streams the file itself
    monkeypatch.setenv("SHOAL_PRESIGN_TTL_S", "0")
    get_settings.cache_clear()
    r = client.get(_path_and_query(link), follow_redirects=False)
    assert r.status_code == 200 and r.content == got.content
    assert r.headers["content-type"].startswith("application/x-ndjson")

    # removed from the bucket: 410, not a redirect to a dead object
    s3_server.client().delete_object(Bucket=bucket, Key=f"shoal/jobs/{job.id}/output/result.ndjson")
    r = client.get(_path_and_query(link), follow_redirects=False)
    assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json")


def test_results_endpoint_reads_parts_on_s3(client, alice, s3_job):
    job, rows = s3_job
    page = client.get(f"/v1/jobs/{job.id}/results?limit=4&offset=9", headers=alice.headers)
    assert page.status_code == 200, page.text
    assert page.json()["total"] == 25
    assert [r["input_index"] for r in page.json()["results"]] == [9, 10, 11, 12]
    whole = client.get(f"/v1/jobs/{job.id}/results?format=ndjson", headers=alice.headers)
    assert whole.status_code == 200
    assert [json.loads(x) for x in whole.content.splitlines()] == rows
