"""A rendered job's headers and navigations: the ``scrape-job`` flow drives real Chromium
against ``tests.sites.render`` (whose robots.txt disallows ``/private``).

The job's default ``headers`` reach the document; a URL's own ``headers`` replace them (and its
``User-Agent`` the browser's); a redirect the browser would follow into ``/private`` is refused
by robots.txt before it is requested, the row ``robots_disallowed`` naming the URL.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.render import RenderSite, need_browser


async def test_a_rendered_jobs_headers_and_robots_txt_per_navigation(
    render_site: RenderSite, shoal_env: Callable[[str, str], None]
) -> None:
    need_browser()
    shoal_env("SHOAL_ALLOW_PRIVATE_NETWORKS", "0")
    shoal_env("SHOAL_ALLOW_HOSTS", "127.0.0.1")
    settings = get_settings()
    private = render_site.url("/private/job")
    jid = _create(
        {
            "urls": [
                render_site.url("/headers?job"),
                {"url": render_site.url("/headers?own"), "headers": {"User-Agent": "Watch/2"}},
                render_site.url("/redirect?to=/private/job"),
            ],
            "defaults": {
                "render": True,
                "headers": {"Authorization": "Bearer s3cret", "X-Shoal-Test": "yes"},
                "formats": ["html"],
                "timeout_s": 20,
            },
            "concurrency": 1,
        }
    )
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Partial"
    row = get_store(settings).get_job(jid)
    assert row is not None
    out = get_storage(settings).open(row.outputs[0]["url"], "rb").read()
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert [(x["error"] or {}).get("code") for x in lines] == [None, None, "robots_disallowed"]

    sent = {path: headers for _, path, headers in render_site.log}
    job, own = sent["/headers?job"], sent["/headers?own"]
    assert job["Authorization"] == "Bearer s3cret" and job["X-Shoal-Test"] == "yes"
    assert "Bearer s3cret" in lines[0]["html"]  # the rendered DOM: what /headers answered
    assert f"(compatible; {settings.user_agent})" in job["User-Agent"]
    assert own["User-Agent"] == "Watch/2" and "Authorization" not in own
    assert lines[2]["final_url"] == private and private in lines[2]["error"]["message"]
    assert lines[2]["credits"] == 0  # nothing was loaded for it
    assert "/private/job" not in sent
