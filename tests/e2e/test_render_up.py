"""A rendered job on the real stack (``shoal up``: Prefect server, worker, API), through HTTP only.

One job in real Chromium against ``tests.sites.render``: a price a timer writes and one an XHR
brings (``wait_for: networkidle``), read by ``extract``; a full-page screenshot downloaded
through its signed ``screenshot_url`` with no API key; a page whose script reaches for an
internal service on 127.0.0.2 (by three spellings, by ``fetch``, image, iframe, a redirect and
a websocket), which must see nothing; the credits on ``GET /v1/jobs/{id}``; the flow run's page
in Prefect saying how many pages were rendered and the seconds it took.

The stack is one of this module's, not the session's: the session stack allows private networks
(its sites and receivers are on 127.0.0.1), which turns the guard off, and the guard is what the
internal listener checks. This one runs the operator's strict policy with the site's 127.0.0.1
allowed (``SHOAL_ALLOW_HOSTS``), as ``tests/integration/test_render_job.py`` does in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shoal.settings import Settings
from tests.e2e.conftest import E2E_ENV
from tests.e2e.prefect_runs import final_state, prefect_api
from tests.e2e.stack import Stack
from tests.sites.render import PRICE, Listener, RenderSite, need_browser

FINAL = {"completed", "partial", "cancelled", "failed"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``shoal up`` with the guard on: private networks refused but for 127.0.0.1."""
    need_browser()
    env = {**E2E_ENV, "SHOAL_ALLOW_PRIVATE_NETWORKS": "0", "SHOAL_ALLOW_HOSTS": "127.0.0.1"}
    s = Stack(tmp_path_factory.mktemp("render-stack") / "data", **env).start()
    try:
        yield s
    finally:
        s.stop()


def _summary(stack: Stack, flow_run_id: str, job_id: str) -> str:
    """The run page's summary artifact, once the flow run has ended (it writes the artifact
    after the job row ends)."""
    with prefect_api(stack) as prefect:
        assert final_state(stack, prefect, flow_run_id)["state"]["type"] == "COMPLETED"
        query = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        found = prefect.post("/artifacts/filter", json=query).json()
    by_key: dict[str, Any] = {a["key"]: a for a in found if a.get("key")}
    return str(by_key["job-" + job_id.lower().replace("_", "-")]["data"])


def test_a_rendered_job_on_the_stack(
    guarded: Stack, render_site: RenderSite, internal: Listener
) -> None:
    port = internal.port
    targets = ",".join(
        (
            f"http://127.0.0.2:{port}/steal",
            f"http://2130706434:{port}/steal",  # 127.0.0.2 as one number
            f"http://[::ffff:127.0.0.2]:{port}/steal",
        )
    )
    urls = [
        render_site.url("/timer?ms=300"),
        {"url": render_site.url("/xhr"), "wait_for": "networkidle"},
        {
            "url": render_site.url("/plain"),
            "formats": ["data", {"screenshot": {"full_page": True}}],
        },
        {
            "url": render_site.url(f"/ssrf?targets={targets}&ws=ws://127.0.0.2:{port}/ws"),
            "wait_for": {"selector": "body[data-done]"},
        },
    ]
    body = {
        "input": {"urls": urls},
        "defaults": {
            "render": True,
            "wait_for": {"selector": ".price:not(:empty)"},
            "extract": {"price": "number"},
            "selectors": {"price": ".price"},
            "timeout_s": 30,
        },
        "concurrency": 4,
    }
    with guarded.client() as client:
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        job = guarded.wait_job(client, jid, FINAL, timeout=180)
        assert job["status"] == "completed", job
        assert (job["urls_done"], job["urls_errored"]) == (4, 0)
        credits = Settings().credits_render  # the stack reads the same environment
        assert job["credits_used"] == 4 * credits

        rows = client.get(f"/v1/jobs/{jid}/results", params={"limit": 10}).json()["results"]
    assert [x["input_index"] for x in rows] == [0, 1, 2, 3]
    for x in rows:
        assert x["status"] == "ok" and x["http_status"] == 200, x
        assert x["data"]["price"] == float(PRICE), x  # written by script, read from the DOM
    assert [i for i, x in enumerate(rows) if x.get("screenshot_url")] == [2]

    # the screenshot, through its signed link with no API key; a tampered link is refused
    link = rows[2]["screenshot_url"]
    got = httpx.get(link, timeout=30)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/png"
    assert got.content.startswith(PNG)
    assert httpx.get(link.replace("sig=", "sig=0"), timeout=30).status_code == 404

    # the page's tries at the internal service reached nothing
    assert internal.connections == 0 and internal.received == b""

    # the run page says how many pages the browser loaded, and how long rendering took
    summary = _summary(guarded, job["flow_run_id"], jid)
    assert "| rendered | 4 pages in " in summary, summary
    assert " s of rendering, " in summary and " s a page |" in summary, summary
