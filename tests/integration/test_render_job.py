"""A job with ``render: true`` end to end: the ``scrape-job`` flow under the Prefect test server
drives real Chromium against ``tests.sites.render``.

One job covers the cases (a browser start per job is the cost worth sharing): a price written
by a timer and one by an XHR, read by ``extract``; a full-page screenshot whose signed
``screenshot_url`` downloads a PNG through the API; a page that loops in script (``timeout``);
a download (``render_failed``); a 404 (``http_4xx``, charged as a fetch's); and a page whose
script tries an internal service on 127.0.0.2, which must see nothing. The operator's policy
is the strict one (no private networks) with 127.0.0.1, where the site is, allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import orjson

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import aware, get_store
from tests.integration.test_run_page import _artifacts
from tests.integration.test_scrape_job_flow import _create
from tests.sites.render import PRICE, Listener, RenderSite, need_browser


async def test_a_rendered_job(
    render_site: RenderSite, internal: Listener, shoal_env: Callable[[str, str], None]
) -> None:
    need_browser()
    shoal_env("SHOAL_ALLOW_PRIVATE_NETWORKS", "0")
    shoal_env("SHOAL_ALLOW_HOSTS", "127.0.0.1")
    settings = get_settings()
    steal = f"http://127.0.0.2:{internal.port}/steal"
    urls = [
        render_site.url("/timer?ms=300"),
        {"url": render_site.url("/xhr"), "wait_for": "networkidle"},
        {
            "url": render_site.url("/plain"),
            "formats": ["data", "html", {"screenshot": {"full_page": True}}],
        },
        {"url": render_site.url("/loop"), "timeout_s": 3},
        {"url": render_site.url("/download"), "wait_for": "load"},
        {"url": render_site.url("/nope"), "wait_for": "load"},
        {
            "url": render_site.url(f"/ssrf?targets={steal}&ws=ws://127.0.0.2:{internal.port}/ws"),
            "wait_for": {"selector": "body[data-done]"},
        },
    ]
    jid = _create(
        {
            "urls": urls,
            "defaults": {
                "render": True,
                "wait_for": {"selector": ".price:not(:empty)"},
                "extract": {"price": "number"},
                "selectors": {"price": ".price"},
                "timeout_s": 20,
            },
            "concurrency": 4,
        }
    )
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Partial"
    store = get_store(settings)
    row = store.get_job(jid)
    assert row is not None and (row.urls_done, row.urls_errored) == (7, 3)
    storage = get_storage(settings)
    lines = [orjson.loads(x) for x in storage.open(row.outputs[0]["url"], "rb").read().splitlines()]
    codes = [(x["error"] or {}).get("code") for x in lines]
    assert codes == [None, None, None, "timeout", "render_failed", "http_4xx", None], lines
    for x in (lines[0], lines[1], lines[2], lines[6]):
        assert x["data"]["price"] == float(PRICE), x  # written by script, read from the DOM
        assert x["credits"] == settings.credits_render and x["http_status"] == 200
    assert lines[5]["http_status"] == 404 and lines[5]["credits"] == settings.credits_render
    assert lines[3]["credits"] == lines[4]["credits"] == 0  # no page: nothing charged
    assert row.credits_used == 5 * settings.credits_render
    assert f'<span class="price">{PRICE}</span>' in lines[2]["html"]
    assert [i for i, x in enumerate(lines) if x.get("screenshot_url")] == [2]

    # the script's tries at the internal service reached nothing
    assert internal.connections == 0 and internal.received == b""

    # the screenshot: a PNG beside the job's files, downloaded through its signed link
    from fastapi.testclient import TestClient

    from api.app import create_app

    link = urlsplit(lines[2]["screenshot_url"])
    # it expires with the output's download link (counted from the job's end, not the render)
    expires_at = aware(row.output_expires_at)
    assert expires_at is not None
    assert parse_qs(link.query)["expires"] == [str(int(expires_at.timestamp()))]
    with TestClient(create_app()) as client:
        got = client.get(f"{link.path}?{link.query}")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/png"
        assert got.content.startswith(b"\x89PNG\r\n\x1a\n")
        tampered = client.get(f"{link.path}?{link.query.replace('sig=', 'sig=0')}")
        assert tampered.status_code == 404
    assert storage.glob(storage.url("jobs", jid, "screenshots", "*.png")) == [
        storage.url("jobs", jid, "screenshots", "2.png")
    ]  # under jobs/<id>/: retention removes it with the rest

    # the run page says how many pages the browser loaded, and how long rendering took
    found = await _artifacts(row.flow_run_id or "")
    summary = str(found["job-" + jid.lower().replace("_", "-")]["data"])
    assert "| rendered | 5 pages in " in summary, summary


async def test_rendering_is_summed_over_chunk_processes(
    render_site: RenderSite, shoal_env: Callable[[str, str], None]
) -> None:
    """Each chunk process renders with browsers of its own; the run page sums them."""
    need_browser()
    shoal_env("SHOAL_CHUNK_MIN_URLS", "2")
    shoal_env("SHOAL_CHUNK_PROCESSES", "2")
    jid = _create(
        {
            "urls": [render_site.url(f"/plain?n={i}") for i in range(4)],
            "defaults": {"render": True, "extract": {"price": "number"}},
            "selectors": {"price": ".price"},
            "concurrency": 16,
        }
    )
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Completed"
    settings = get_settings()
    row = get_store(settings).get_job(jid)
    assert row is not None and row.urls_done == 4
    out = get_storage(settings).open(row.outputs[0]["url"], "rb").read()
    assert [orjson.loads(x)["data"]["price"] for x in out.splitlines()] == [float(PRICE)] * 4
    found = await _artifacts(row.flow_run_id or "")
    summary = str(found["job-" + jid.lower().replace("_", "-")]["data"])
    assert "| rendered | 4 pages in " in summary, summary
