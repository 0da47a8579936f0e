"""A URL file's rows asking for a screenshot give the job its ``screenshot_url`` column (issue 14).

The defaults and inline URLs decided it alone: a job whose upload's (or S3 file's) rows asked
for the screenshot format had the links in NDJSON rows and no column in CSV/Parquet. The flag
is recorded where the rows are read (the upload, at upload time; an S3 file, by staging), so
every output file and results page of the job has the same columns from its first part on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import urlsplit

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from shoal import inputs, jobs, staging
from shoal.chunking import plan_chunks
from shoal.contract import JobCreate, JobSpec
from shoal.finalize import finalize_job
from shoal.scrape import JobRuntime, scrape_chunk
from shoal.settings import Settings, get_settings
from shoal.storage import get_storage
from shoal.store import UploadRow, get_store
from tests.s3server import S3Server
from tests.sites.render import PRICE, RenderSite, need_browser

PNG = b"\x89PNG\r\n\x1a\n"


def _stats(body: bytes, settings: Settings) -> inputs.InputStats:
    out = io.BytesIO()
    return inputs.normalize(io.BytesIO(body), out, fmt="csv", settings=settings, max_bytes=1 << 20)


def test_a_files_rows_asking_for_a_screenshot_are_recorded(settings: Settings) -> None:
    head = b"url,formats,render\n"
    assert _stats(head + b"https://a.example/,screenshot,true\n", settings).screenshots
    full = b'https://a.example/,"[{""screenshot"": {""full_page"": true}}]",\n'
    assert _stats(head + full, settings).screenshots  # render left to the job
    assert not _stats(head + b"https://a.example/,data;html,true\n", settings).screenshots
    # a row that is not staged (a bad URL, render: false) asks for nothing
    bad = b"ftp://a.example/,screenshot,true\nhttps://a.example/,screenshot,false\n"
    assert not _stats(head + bad, settings).screenshots


def test_an_old_upload_and_an_old_spec_keep_their_columns(settings: Settings, store) -> None:
    """An upload stored before the flag (``screenshots`` 0, the column's default) and a spec
    without ``screenshots`` read as before: no column."""
    account, _ = store.get_or_create_account("old")
    old = UploadRow(
        id="upl_old",
        account_id=account.id,
        format="csv",
        size_bytes=1,
        lines=1,
        urls_valid=1,
        errors=[],
        fields={"price": "number"},
        url="x",
    )
    req = JobCreate.model_validate({"input": {"upload_id": "upl_old"}, "output": {"format": "csv"}})
    spec, _ = jobs.validate(req, settings, account, old)
    assert (spec.screenshots, spec.fields) == (False, {"price": "number"})
    old.screenshots = 1  # a row of the file asks for one (uploads.screenshots, migration 0005)
    spec, _ = jobs.validate(req, settings, account, old)
    assert (spec.screenshots, spec.fields) == (True, {"price": "number"})
    stored = spec.model_dump(mode="json")
    del stored["screenshots"]
    assert JobSpec.model_validate(stored).screenshots is False


def test_staging_an_s3_file_records_its_screenshot_rows(
    settings: Settings, store, s3_server: S3Server
) -> None:
    """The flow reads an S3 file at staging (moto's server), before any part: the spec gets
    the flag there."""
    body = b"url,formats,render\nhttps://a.example/,screenshot,true\nhttps://b.example/,,\n"
    bucket = s3_server.make_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="urls.csv", Body=body)
    settings = settings.model_copy(update={"s3_endpoint_url": s3_server.endpoint_url})
    account, _ = store.get_or_create_account("s3")
    req = JobCreate.model_validate(
        {
            "input": {"s3_uri": f"s3://{bucket}/urls.csv"},
            "defaults": {"selectors": {"price": ".price"}},
            "output": {"format": "csv"},
        }
    )
    spec, _ = jobs.validate(req, settings, account)
    assert spec.screenshots is False  # nothing read yet
    row = store.insert_job(jobs.new_job_row(req, spec, account, urls_total=None))
    staging.stage_input(row, settings)
    staged = store.get_job(row.id)
    assert staged is not None and staged.urls_total == 2
    assert JobSpec.model_validate(staged.spec).screenshots is True


@pytest.fixture
def private(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The render site is on 127.0.0.1: the operator allows private networks."""
    need_browser()
    monkeypatch.setenv("SHOAL_ALLOW_PRIVATE_NETWORKS", "1")
    monkeypatch.setenv("SHOAL_PARSE_WORKERS", "0")
    get_settings.cache_clear()
    yield get_settings()


async def _run(job_id: str, settings: Settings) -> None:
    """The flow's steps for one job: stage, one chunk, finalize (no Prefect needed here)."""
    store = get_store(settings)
    storage = get_storage(settings)
    row = store.get_job(job_id)
    assert row is not None
    staging.stage_input(row, settings)
    row = store.get_job(job_id)
    assert row is not None and row.urls_total is not None
    spec = JobSpec.model_validate(row.spec)
    store.update_job(job_id, status="running")
    in_url = jobs.input_url(storage, job_id)
    [chunk], _ = plan_chunks(storage, in_url, settings, size=row.urls_total)
    rt = JobRuntime.open(job_id, spec, settings)
    try:
        await scrape_chunk(rt, in_url, chunk)
    finally:
        await rt.close()
    finalize_job(job_id, settings)


def _path(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


async def test_an_upload_asking_for_screenshots_has_the_column_in_csv_and_parquet(
    private: Settings, client, alice, render_site: RenderSite
) -> None:
    csv = (
        "url,formats\n"
        f"{render_site.url('/plain')},data;screenshot\n"
        f"{render_site.url('/plain?again')},\n"  # the job's formats: no screenshot
    ).encode()
    up = client.post(
        "/v1/uploads", content=csv, headers={**alice.headers, "Content-Type": "text/csv"}
    )
    assert up.status_code == 201, up.text
    assert up.json()["urls_valid"] == 2
    store = get_store(private)
    storage = get_storage(private)
    for fmt in ("csv", "parquet"):
        created = client.post(
            "/v1/jobs",
            json={
                "input": {"upload_id": up.json()["id"]},
                "defaults": {"render": True, "selectors": {"price": ".price"}},
                "output": {"format": fmt},
            },
            headers=alice.headers,
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        await _run(job_id, private)
        row = store.get_job(job_id)
        assert row is not None and row.status == "completed", row.error
        [out] = row.outputs
        with storage.open(out["url"], "rb") as f:
            data = f.read()
        reader = pcsv.read_csv if fmt == "csv" else pq.read_table
        table = reader(io.BytesIO(data)).to_pylist()
        assert [str(r["price"]) for r in table] == [str(PRICE)] * 2  # read from the DOM
        shots = [r["screenshot_url"] for r in table]
        assert shots[0] and not shots[1], shots  # CSV writes null as an empty cell
        assert f"/v1/downloads/{job_id}/screenshot-0.png?" in shots[0]
        png = client.get(_path(shots[0]))
        assert png.status_code == 200 and png.content.startswith(PNG)

        page = client.get(f"/v1/jobs/{job_id}/results?format=csv", headers=alice.headers)
        assert page.status_code == 200, page.text
        rows = pcsv.read_csv(io.BytesIO(page.content)).to_pylist()
        assert [bool(r["screenshot_url"]) for r in rows] == [True, False]
        assert f"/v1/downloads/{job_id}/screenshot-0.png?" in rows[0]["screenshot_url"]
