"""Screenshots on object storage: a rendered job whose files go to S3 (moto's server).

The contract stores a screenshot "beside the job's output, in S3 too": the PNG must land under
the job's prefix in the bucket, its signed ``screenshot_url`` must answer ``307`` to a
presigned URL of the store that serves the very bytes stored, and retention, which removes the
job's prefix, must take it with the rest (the link then answers ``410``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from flows.scrape_job import scrape_job
from shoal.retention import remove_expired
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store, utcnow
from tests.integration.test_scrape_job_flow import _create
from tests.s3server import S3Server
from tests.sites.render import PRICE, RenderSite, need_browser


async def test_a_screenshot_on_s3_is_served_presigned_and_removed_with_the_job(
    render_site: RenderSite,
    s3_server: S3Server,
    shoal_env: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    need_browser()
    bucket = s3_server.make_bucket()
    # a store of its own: the retention pass below must see no other test's jobs
    shoal_env("SHOAL_DATABASE_URL", f"sqlite:///{tmp_path / 'shoal.db'}")
    shoal_env("SHOAL_S3_ENDPOINT_URL", s3_server.endpoint_url)
    shoal_env("SHOAL_RESULTS_URL", f"s3://{bucket}/shoal")
    settings = get_settings()
    jid = _create(
        {
            "urls": [
                {"url": render_site.url("/timer?ms=300"), "formats": ["data", "screenshot"]},
                render_site.url("/plain"),
            ],
            "defaults": {
                "render": True,
                "wait_for": {"selector": ".price:not(:empty)"},
                "extract": {"price": "number"},
                "selectors": {"price": ".price"},
            },
            "output": {"expires_in_s": 3600},
        },
        "integration-render-s3",
    )
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Completed"
    row = get_store(settings).get_job(jid)
    assert row is not None and row.outputs and row.outputs[0]["url"].startswith("s3://")
    storage = get_storage(settings)
    lines = [orjson.loads(x) for x in storage.open(row.outputs[0]["url"], "rb").read().splitlines()]
    assert [x["data"]["price"] for x in lines] == [float(PRICE)] * 2
    assert lines[1].get("screenshot_url") is None  # only the URL that asked has one

    # the PNG is in the bucket under the job's prefix
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"shoal/jobs/{jid}/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert f"shoal/jobs/{jid}/screenshots/0.png" in keys, keys
    stored = (
        s3_server.client()
        .get_object(Bucket=bucket, Key=f"shoal/jobs/{jid}/screenshots/0.png")["Body"]
        .read()
    )
    assert stored.startswith(b"\x89PNG\r\n\x1a\n")

    # its link answers 307 to a presigned URL of the store, which serves those bytes
    link = urlsplit(lines[0]["screenshot_url"])
    with TestClient(create_app()) as client:
        got = client.get(f"{link.path}?{link.query}", follow_redirects=False)
        assert got.status_code == 307, got.text
        target = got.headers["location"]
        assert target.startswith(s3_server.endpoint_url), target
        fetched = httpx.get(target, timeout=10)
        assert fetched.status_code == 200 and fetched.content == stored

        # retention removes the job's prefix, screenshot included; the link is then 410
        later = utcnow() + timedelta(days=400)
        report = remove_expired(settings, now=later)
        assert jid in report.jobs_removed
        listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"shoal/jobs/{jid}/")
        assert listed.get("KeyCount", 0) == 0
        gone = client.get(f"{link.path}?{link.query}", follow_redirects=False)
        assert gone.status_code == 410, gone.text
