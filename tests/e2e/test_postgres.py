"""The whole stack with its job store on PostgreSQL (``SHOAL_DATABASE_URL``), through HTTP only:
the API, the worker, the flow and its chunk processes all write to one real PostgreSQL."""

from __future__ import annotations

import httpx
import orjson
import sqlalchemy as sa

from tests.e2e.stack import Stack
from tests.pgserver import PgServer
from tests.sites.catalog import Site

FINAL = {"completed", "partial", "cancelled", "failed"}


def test_a_job_end_to_end_on_postgres(tmp_path, pg_server: PgServer, site: Site) -> None:  # type: ignore[no-untyped-def]
    database = pg_server.new_database()
    stack = Stack(tmp_path / "data", SHOAL_DATABASE_URL=database).start()
    try:
        with stack.client() as c:
            urls = [site.url(f"/p/{i}") for i in range(400)] + [site.url("/status/404/1")]
            r = c.post(
                "/v1/jobs",
                json={"input": {"urls": urls}, "concurrency": 16, "selectors": {"t": "h1"}},
                headers={"Idempotency-Key": "pg-1"},
            )
            assert r.status_code == 202, r.text
            job = stack.wait_job(c, r.json()["id"], FINAL, timeout=120)
            assert job["status"] == "partial"
            assert (job["urls_done"], job["urls_errored"]) == (401, 1)
            lines = [orjson.loads(x) for x in httpx.get(job["download_url"]).content.splitlines()]
            assert [x["input_index"] for x in lines] == list(range(401))
            assert lines[7]["data"] == {"t": "Product 7"}
            retry = c.post(f"/v1/jobs/{job['id']}/retry")
            assert retry.status_code == 202, retry.text
            again = stack.wait_job(c, retry.json()["id"], FINAL, timeout=120)
            assert again["urls_total"] == 1 and again["urls_errored"] == 1
    finally:
        stack.stop()
    # the rows are in PostgreSQL, not in a SQLite file beside the data
    assert not (tmp_path / "data" / "shoal.db").exists()
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(sa.text("select status from jobs order by created_at")).all()
            chunks = conn.execute(sa.text("select count(*) from job_chunks")).scalar()
    finally:
        engine.dispose()
    assert [s[0] for s in statuses] == ["partial", "partial"]
    assert chunks and chunks >= 2  # the first job's chunks ran in their own processes
