"""A URL file's rows with options a job cannot run (issue 14): refused like a bad URL, whether
the file's reading finds it (the row says it all) or the job does (the row leaves ``render`` to
the job's defaults): an ``invalid_url`` row naming the field, nothing fetched, nothing charged."""

from __future__ import annotations

import io
from typing import Literal

import pytest

from shoal import inputs, jobs
from shoal.chunking import plan_chunks
from shoal.contract import JobCreate
from shoal.output import part_urls, read_results
from shoal.scrape import JobRuntime, scrape_chunk
from shoal.settings import Settings, get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.sites.catalog import Site

NEEDS = "formats: the screenshot format needs render: true"


def _upload(
    body: bytes, settings: Settings, fmt: Literal["ndjson", "csv"]
) -> tuple[inputs.InputStats, bytes]:
    out = io.BytesIO()
    stats = inputs.normalize(io.BytesIO(body), out, fmt=fmt, settings=settings, max_bytes=1 << 20)
    return stats, out.getvalue()


def test_a_row_saying_render_false_with_a_screenshot_is_a_line_error(settings: Settings) -> None:
    body = b'{"url": "https://a.example/", "formats": ["screenshot"], "render": false}\n'
    body += b'{"url": "https://a.example/", "wait_for": "soon"}\n'
    stats, _ = _upload(body, settings, "ndjson")
    assert stats.urls_valid == 0
    assert stats.errors[0] == {"line": 1, "msg": NEEDS}
    assert stats.errors[1]["msg"].startswith("wait_for: ")  # the same style


async def test_file_rows_a_job_cannot_run_are_invalid_url_rows(
    site: Site, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_ALLOW_PRIVATE_NETWORKS", "1")  # the site is on 127.0.0.1
    monkeypatch.setenv("SHOAL_PARSE_WORKERS", "0")
    get_settings.cache_clear()
    settings = get_settings()
    csv = (
        "url,formats,wait_for,render\n"
        f"{site.url('/p/0')},screenshot,,\n"  # render left to the job: known when it runs
        f'{site.url("/p/1")},"[{{""screenshot"": {{""full_page"": true}}}}]",,false\n'
        f"{site.url('/p/2')},,soon,\n"  # a bad option, found when the file is read
        "ftp://a.example/,,,\n"  # a bad URL
        f"{site.url('/p/4')},data,,\n"
    ).encode()
    stats, staged = _upload(csv, settings, "csv")
    assert (stats.lines, stats.urls_valid) == (5, 2)
    store = get_store(settings)
    account, _ = store.get_or_create_account("file-rows")
    req = JobCreate.model_validate({"urls": [site.url("/p/0")], "defaults": {"render": False}})
    spec, _ = jobs.validate(req, settings, account)
    row = jobs.new_job_row(req, spec, account, urls_total=stats.lines)
    storage = get_storage(settings)
    in_url = jobs.input_url(storage, row.id)
    storage.write_bytes_atomic(in_url, staged)  # as the flow stages an upload: a copy
    store.insert_job(row)
    [chunk], _ = plan_chunks(storage, in_url, settings, size=stats.lines)
    rt = JobRuntime.open(row.id, spec, settings)
    try:
        await scrape_chunk(rt, in_url, chunk)
    finally:
        await rt.close()
    rows, _ = read_results(storage, part_urls(storage, row.id), limit=100, offset=0)
    errors = [r["error"] for r in rows]
    assert [e and e["code"] for e in errors] == [
        "invalid_url",
        "invalid_url",
        "invalid_url",
        "invalid_url",
        None,
    ]
    assert errors[0]["message"] == errors[1]["message"] == NEEDS
    assert errors[2]["message"].startswith("wait_for: ")
    for r in rows[:4]:
        assert (r["attempts"], r["credits"], r["http_status"]) == (0, 0, None), r
    assert rows[4]["status"] == "ok" and rows[4]["credits"] == settings.credits_plain
    # nothing of the refused rows was asked of the site
    assert not any(site.stats.hits.get(p) for p in ("/p/0", "/p/1", "/p/2"))
    assert site.stats.hits["/p/4"] == 1
