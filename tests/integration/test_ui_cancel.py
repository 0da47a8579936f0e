"""A cancel from the Prefect UI ends a job as ``DELETE`` does (issue 11): the flow run is set
``Cancelling`` on the server, a Prefect ``Runner`` (as the worker runs it) SIGTERMs the flow-run
process and then runs the ``on_cancellation`` hook. The job ends ``cancelled`` with every row
its chunks had finished before the kill (only requests in flight are lost), ``urls_done`` never
below what the client saw while it ran, and ``credits_used`` equal to the credits of those rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prefect.client.orchestration import get_client
from prefect.runner import Runner
from prefect.states import Cancelling

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import Site


async def _until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := await asyncio.to_thread(cond)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return got


@pytest.mark.parametrize(
    ("concurrency", "ms", "lost_at_most"),
    [(4, 150, 4), (16, 300, 32)],
    ids=["chunks-in-flow", "chunk-processes"],
)
async def test_cancel_from_the_ui_keeps_every_finished_row(
    site: Site,
    shoal_env: Callable[[str, str], None],
    concurrency: int,
    ms: int,
    lost_at_most: int,
) -> None:
    shoal_env("SHOAL_CHUNK_MAX_URLS", "250")  # several chunks: two processes at C=16
    n = 1000  # 30-40 s of work: the cancel lands in the middle
    jid = _create(
        {"urls": [site.url(f"/slow/{i}?ms={ms}") for i in range(n)], "concurrency": concurrency}
    )
    store = get_store(get_settings())
    runner = Runner(name=f"ui-cancel-{uuid.uuid4().hex[:8]}", query_seconds=1, limit=2)
    deployment_id = await runner.aadd_flow(scrape_job, name=f"ui-cancel-{concurrency}")
    serving = asyncio.create_task(runner.start(webserver=False))
    try:
        async with get_client() as client:
            fr = await client.create_flow_run_from_deployment(
                deployment_id, parameters={"job_id": jid}
            )
            seen = []

            def progressed() -> bool:
                seen.append(store.get_job(jid).urls_done)  # type: ignore[union-attr]
                return store.counters(jid).done >= 150

            await _until(progressed, 120, "150 rows persisted")
            before = store.counters(jid).done
            # what the UI's "Cancel" button does
            await client.set_flow_run_state(fr.id, Cancelling(), force=True)
            row = await _until(
                lambda: (r := store.get_job(jid)) is not None and r.completed_at and r, 90, "end"
            )
            state = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = (await client.read_flow_run(fr.id)).state
                if state is not None and state.is_final():
                    break
                await asyncio.sleep(0.2)
            assert state is not None and state.is_cancelled(), state
    finally:
        if runner.started:
            await runner.astop()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    hits = sum(n for p, n in site.stats.hits.items() if p.startswith("/slow/"))
    assert row.status == "cancelled" and "Prefect UI" in (row.error or "")
    out = get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()
    got = [orjson.loads(x)["input_index"] for x in out.splitlines()]
    assert got == sorted(set(got))  # each row once, in input order
    assert row.urls_done == len(got) == row.credits_used  # credits of the rows kept, 1 each
    assert before <= row.urls_done < n  # nothing persisted was lost
    assert max(seen) <= row.urls_done  # urls_done never went back
    # every request the site answered was kept, but those cut off in flight by the kill. With
    # chunk processes about one run in three also loses requests answered while the flow
    # process was being terminated (8-16 more at C=16: 232 served, 208 kept), an open gap
    # named in issue 11's closing note: the bound there is twice the requests in flight
    assert hits - lost_at_most <= row.urls_done <= hits
