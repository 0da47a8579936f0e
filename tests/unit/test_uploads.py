"""``/v1/uploads`` and jobs over an upload or an S3 URI, through the HTTP layer."""

from __future__ import annotations

import gzip
import json

import pytest

from shoal.contract import JobSpec
from shoal.settings import get_settings
from shoal.staging import stage_input
from shoal.storage import get_storage
from tests.unit.test_api import assert_problem

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


def ndjson(n: int, start: int = 0) -> bytes:
    return b"".join(b'"https://example.com/p/%d"\n' % i for i in range(start, start + n))


def upload(client, caller, content: bytes, headers: dict | None = None, **kw):
    return client.post(
        "/v1/uploads", headers={**caller.headers, **(headers or NDJSON)}, content=content, **kw
    )


def staged_lines(settings, url: str) -> list[dict]:
    storage = get_storage(settings)
    with storage.open(url, "rb") as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


def uploads_left(settings) -> list:
    root = settings.data_dir / "results" / "uploads"
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def with_limit(monkeypatch, **env: str):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


# --- upload --------------------------------------------------------------------------------


def test_raw_ndjson_upload_is_201_and_readable(client, alice, store, settings):
    body = ndjson(3) + b"\n" + b'"ftp://x.example/"\n' + b'{"url": "https://e.com/", "meta": 1}\n'
    r = upload(client, alice, body)
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["id"].startswith("upl_") and up["format"] == "ndjson"
    assert (up["size_bytes"], up["lines"], up["urls_valid"]) == (len(body), 5, 4)
    assert up["errors"] == [{"line": 5, "msg": "not an http(s) URL"}]
    assert up["created_at"].endswith("Z") or "+00:00" in up["created_at"]
    assert r.headers["location"] == f"/v1/uploads/{up['id']}"
    assert client.get(f"/v1/uploads/{up['id']}", headers=alice.headers).json() == up

    row = store.get_upload(up["id"], alice.account.id)
    staged = staged_lines(settings, row.url)
    assert len(staged) == 5 and staged[3]["error"] == "not an http(s) URL"
    assert staged[4] == {"url": "https://e.com/", "meta": 1, "o": {}}


def test_raw_csv_gzip_with_content_encoding(client, alice):
    csv = b'url,selectors\nhttps://e.com/1,"{""t"": ""h1""}"\nhttps://e.com/2,\n'
    body = gzip.compress(csv)
    r = upload(client, alice, body, {"Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["format"], up["size_bytes"], up["lines"], up["urls_valid"]) == (
        "csv",
        len(body),
        2,
        2,
    )


def test_streamed_chunked_body(client, alice):
    def gen():
        for i in range(50):
            yield ndjson(100, i * 100)

    r = upload(client, alice, gen())
    assert r.status_code == 201, r.text
    assert r.json()["lines"] == 5000


def test_multipart_upload_uses_the_file_field(client, alice, store, settings):
    data = gzip.compress(b"url,meta\nhttps://e.com/1,a\nnope,b\n")
    r = client.post(
        "/v1/uploads",
        headers=alice.headers,
        data={"note": "ignored"},
        files={"file": ("urls.csv.gz", data, "application/octet-stream")},
    )
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["format"], up["size_bytes"], up["lines"], up["urls_valid"]) == (
        "csv",
        len(data),
        2,
        1,
    )
    assert up["errors"] == [{"line": 3, "msg": "not an http(s) URL"}]
    staged = staged_lines(settings, store.get_upload(up["id"]).url)
    assert staged[0] == {"url": "https://e.com/1", "meta": "a", "o": {}}

    # no file name: the part's content type says ndjson
    r = client.post(
        "/v1/uploads",
        headers=alice.headers,
        files={"file": (None, ndjson(2), "application/x-ndjson")},
    )
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "ndjson" and r.json()["lines"] == 2


def test_multipart_without_file_field_is_422(client, alice, settings):
    r = client.post(
        "/v1/uploads", headers=alice.headers, files={"other": ("a.csv", b"url\nhttps://e.com\n")}
    )
    assert_problem(r, 422, "file")
    assert uploads_left(settings) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        # the body stops inside the file part: no closing boundary
        (b'--B\r\nContent-Disposition: form-data; name="file"; filename="u.ndjson"\r\n\r\n'
         + ndjson(50), "ended"),
        # a part header line that is not a header
        (b"--B\r\nthis is not a header\r\n\r\nx\r\n--B--\r\n", "multipart"),
    ],
)  # fmt: skip
def test_a_broken_multipart_body_is_400_and_keeps_nothing(
    client, alice, store, settings, body, why
):
    r = client.post(
        "/v1/uploads",
        headers={**alice.headers, "Content-Type": "multipart/form-data; boundary=B"},
        content=body,
    )
    problem = assert_problem(r, 400, "file")
    assert why in problem["detail"] or why in json.dumps(problem["errors"])
    assert uploads_left(settings) == []


@pytest.mark.parametrize(
    ("content", "headers", "status", "loc"),
    [
        (b"", NDJSON, 422, "body"),
        (b"\n\n", NDJSON, 422, "body"),
        (b"link\nhttps://e.com\n", CSV, 422, "body"),
        (b"url,colour\nhttps://e.com,red\n", CSV, 422, "body"),
        # a bad gzip body is a malformed body (400), never read as text
        (gzip.compress(ndjson(100))[:-20], NDJSON, 400, "body"),
        (gzip.compress(ndjson(100))[:-20], {**NDJSON, "Content-Encoding": "gzip"}, 400, "body"),
        (ndjson(3), {**NDJSON, "Content-Encoding": "gzip"}, 400, "body"),
        (ndjson(1), {"Content-Type": "application/json"}, 415, "Content-Type"),
        (ndjson(1), {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        (ndjson(1), {**NDJSON, "Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
)
def test_refused_uploads_leave_nothing(
    client, alice, store, settings, content, headers, status, loc
):
    body = assert_problem(upload(client, alice, content, headers), status, loc)
    assert body["errors"][0]["msg"]
    assert uploads_left(settings) == []


def test_unknown_csv_column_is_named(client, alice):
    r = upload(client, alice, b"url,colour\nhttps://e.com,red\n", CSV)
    assert "colour" in assert_problem(r, 422, "body")["errors"][0]["msg"]


def test_too_large_is_413_and_leaves_nothing(client, alice, store, settings, monkeypatch):
    with_limit(monkeypatch, SHOAL_MAX_UPLOAD_BYTES="2000")
    assert upload(client, alice, ndjson(10)).status_code == 201  # under the cap
    kept = uploads_left(settings)

    def gen():  # no Content-Length: the cap is counted as the bytes come
        for i in range(100):
            yield ndjson(10, i * 10)

    assert_problem(upload(client, alice, gen()), 413)
    # over the cap by Content-Length, as multipart, and as a gzip bomb (small, inflates big)
    assert_problem(upload(client, alice, ndjson(100_000)), 413)
    files = {"file": ("u.ndjson", b"".join(gen()), "application/x-ndjson")}
    assert_problem(client.post("/v1/uploads", headers=alice.headers, files=files), 413)
    bomb = gzip.compress(b"\n" * 100_000)
    assert len(bomb) < 2000
    assert_problem(upload(client, alice, bomb), 413)
    assert uploads_left(settings) == kept  # nothing of the refused ones
    from shoal.store._db import session_scope
    from shoal.store._tables import UploadRow

    with session_scope(store.url) as s:
        assert s.query(UploadRow).count() == 1


def test_upload_of_another_account_is_404(client, alice, bob):
    up = upload(client, alice, ndjson(1)).json()
    assert_problem(client.get(f"/v1/uploads/{up['id']}", headers=bob.headers), 404)
    assert_problem(client.get("/v1/uploads/upl_000000000000", headers=alice.headers), 404)
    assert_problem(client.post("/v1/uploads", content=ndjson(1), headers=NDJSON), 401)


# --- jobs over uploads and S3 --------------------------------------------------------------


def test_job_from_upload_knows_urls_total_and_is_staged_by_the_flow(
    client, alice, store, settings, flow_starter
):
    up = upload(client, alice, ndjson(7) + b"bad\n").json()
    r = client.post("/v1/jobs", headers=alice.headers, json={"input": {"upload_id": up["id"]}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["urls_total"] == 8
    assert [c.id for c in flow_starter.calls] == [job["id"]]
    row = store.get_job(job["id"])
    spec = JobSpec.model_validate(row.spec)
    assert spec.source.kind == "upload" and spec.source.upload_id == up["id"]
    storage = get_storage(settings)
    dest = storage.url("jobs", job["id"], "input.ndjson")
    assert not storage.exists(dest)  # not staged at creation

    stage_input(store.get_job(job["id"]), settings)  # what the flow's plan_job does first
    staged = staged_lines(settings, dest)
    assert len(staged) == 8 and staged[7]["error"] == "not an http(s) URL"
    # staged once: a resumed run does not copy again, even if the upload went away
    storage.rm(store.get_upload(up["id"]).url)
    stage_input(store.get_job(job["id"]), settings)
    assert len(staged_lines(settings, dest)) == 8


def test_job_from_upload_checks_owner_and_limits(client, alice, bob, monkeypatch):
    up = upload(client, alice, ndjson(3)).json()
    for caller, body in [
        (bob, {"input": {"upload_id": up["id"]}}),
        (alice, {"input": {"upload_id": "upl_000000000000"}}),
        (alice, {"input": {"upload_id": up["id"], "urls": ["https://e.com"]}}),
    ]:
        r = client.post("/v1/jobs", headers=caller.headers, json=body)
        assert r.status_code == 422, r.text
        assert any(e["loc"].startswith("input") for e in r.json()["errors"]), r.json()
    with_limit(monkeypatch, SHOAL_MAX_URLS_PER_JOB="2")
    r = client.post("/v1/jobs", headers=alice.headers, json={"input": {"upload_id": up["id"]}})
    assert "at most 2" in assert_problem(r, 422, "input.upload_id")["errors"][0]["msg"]


def test_csv_output_needs_fields_from_defaults_or_the_upload(client, alice, store):
    plain = upload(client, alice, ndjson(2)).json()
    body = {"input": {"upload_id": plain["id"]}, "output": {"format": "csv"}}
    assert_problem(client.post("/v1/jobs", headers=alice.headers, json=body), 422, "output.format")
    body["defaults"] = {"selectors": {"title": "h1"}}
    assert client.post("/v1/jobs", headers=alice.headers, json=body).status_code == 202

    csv = b'url,extract\nhttps://e.com/1,"{""price"": ""number""}"\n'
    typed = upload(client, alice, csv, CSV).json()
    body = {"input": {"upload_id": typed["id"]}, "output": {"format": "parquet"}}
    r = client.post("/v1/jobs", headers=alice.headers, json=body)
    assert r.status_code == 202, r.text
    assert store.get_job(r.json()["id"]).spec["fields"] == {"price": "number"}


@pytest.mark.parametrize(
    ("inp", "loc"),
    [
        ({"s3_uri": "https://bucket/key.ndjson"}, "input.s3_uri"),
        ({"s3_uri": "s3://bucket"}, "input.s3_uri"),
        ({"s3_uri": "s3://bucket/dir/"}, "input.s3_uri"),
        ({"s3_uri": "gs://bucket/key.ndjson"}, "input.s3_uri"),  # gcsfs is not installed
        ({"s3_uri": "s3://bucket/key.ndjson", "role_arn": "admin"}, "input.role_arn"),
        ({"s3_uri": "s3://bucket/key.ndjson", "bogus": 1}, "input.bogus"),
    ],
)
def test_s3_input_is_checked_at_creation(client, alice, flow_starter, inp, loc):
    assert_problem(client.post("/v1/jobs", headers=alice.headers, json={"input": inp}), 422, loc)
    assert not flow_starter.calls


def test_s3_job_has_no_urls_total_until_read(client, alice, store):
    inp = {"s3_uri": "s3://bucket/urls.csv.gz", "role_arn": "arn:aws:iam::1:role/r"}
    body = {"input": inp, "output": {"format": "csv"}}  # fields may come from the file
    r = client.post("/v1/jobs", headers=alice.headers, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["urls_total"] is None
    spec = store.get_job(r.json()["id"]).spec
    assert spec["source"] == {
        "kind": "s3",
        "upload_id": None,
        "uri": "s3://bucket/urls.csv.gz",
        "role_arn": "arn:aws:iam::1:role/r",
    }
    got = client.get(f"/v1/jobs/{r.json()['id']}", headers=alice.headers).json()
    assert got["urls_total"] is None and got["progress"]["percentage"] is None


def test_upload_and_staging_on_s3_results_storage(client, alice, store, monkeypatch, s3_server):
    """With results on S3 the upload streams into the bucket and the job's copy is made
    there (server-side), never partially."""
    bucket = s3_server.make_bucket()
    with_limit(
        monkeypatch,
        SHOAL_RESULTS_URL=f"s3://{bucket}/shoal",
        SHOAL_S3_ENDPOINT_URL=s3_server.endpoint_url,
        SHOAL_S3_REGION="us-east-1",
    )
    settings = get_settings()
    up = upload(client, alice, gzip.compress(ndjson(20)), {"Content-Type": "application/gzip"})
    assert up.status_code == 201, up.text
    row = store.get_upload(up.json()["id"])
    assert row.url == f"s3://{bucket}/shoal/uploads/{row.id}/input.ndjson"
    r = client.post("/v1/jobs", headers=alice.headers, json={"input": {"upload_id": row.id}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    stage_input(store.get_job(job_id), settings)
    staged = staged_lines(settings, f"s3://{bucket}/shoal/jobs/{job_id}/input.ndjson")
    assert [s["url"] for s in staged] == [f"https://example.com/p/{i}" for i in range(20)]
    # a refused upload leaves nothing in the bucket
    with_limit(monkeypatch, SHOAL_MAX_UPLOAD_BYTES="100")
    assert_problem(upload(client, alice, ndjson(20)), 413)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(k.split("/")[1] for k in keys) == ["jobs", "uploads"]
    assert len([k for k in keys if k.startswith("shoal/uploads/")]) == 1
