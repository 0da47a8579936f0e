"""Issue 12's probes, re-tried as written on the real stack (``shoal up``, the network guard on).

    .venv/bin/python bench/hostile_items.py

Starts ``shoal up`` on a fresh data folder with ``SHOAL_ALLOW_PRIVATE_NETWORKS=0`` and only
``localhost`` allowed (``SHOAL_ALLOW_HOSTS``), so test sites are reached by that name and every
other private spelling meets the guard, then prints one line per probe: what was sent and what
came back. Items 6 and 8 (bodies: the API's memory and CPU) are ``bench/hostile_bodies.py``,
item 9 (one account's retry flood) ``bench/retry_flood.py``;
the transport's items also have their suites (``tests/unit/test_h1_conformance.py``,
``test_h1_properties.py``, ``test_fetch_connect.py``), which this does not repeat.

1. a 405-byte brotli body of 256 MiB, fetched by a job: the row's error, the worker's peak RSS
2. per-URL ``headers`` with ``Content-Length``, ``Host``, a DEL in a value: the answer
3. a ``101 Switching Protocols`` answer: the row's error, and whether a worker log says
   "Fatal error: protocol.data_received() call failed"
5. a URL on ``[fec0::1]`` (site-local): the row's error
7. a download link with a non-ASCII ``sig``; ``GET /v1/jobs?offset=9223372036854775808``
10. webhook URLs ``http://2130706433/`` and ``http://127.1/``; a 100 KB URL; selectors
    ``a[[[[`` and XPath ``//a[``; a body sent as ``Content-Encoding: gzip`` that is not gzip (job
    and upload); file modes of the store, a result and a log; ``shoal keys revoke`` then a
    request with the key; the document's ``status`` enum; a 405's ``Allow``
11. a job store made by 55f2ba1 with rows (``tests/fixtures/store_55f2ba1.sql``) upgraded by
    ``shoal db current``/``db upgrade``: revision before and after, NULLs left in NOT NULL columns
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import Stack  # noqa: E402
from tests.procs import descendants  # noqa: E402
from tests.sites.catalog import Site  # noqa: E402
from tests.sites.hostile import brotli_bomb  # noqa: E402
from tests.sites.raw import CLOSE, RawServer  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}


def local(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def problem(r: httpx.Response) -> str:
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        body = r.json()
        where = body.get("errors") or body.get("detail", "")
        return f"{r.status_code} {str(where)[:160]}"
    return f"{r.status_code}"


def run_job(stack: Stack, c: httpx.Client, body: dict, timeout: float = 120) -> list[dict]:
    r = c.post("/v1/jobs", json=body)
    r.raise_for_status()
    job = stack.wait_job(c, r.json()["id"], FINAL, timeout=timeout)
    return [orjson.loads(x) for x in httpx.get(job["download_url"]).content.splitlines()]


def job_with_peak(stack: Stack, c: httpx.Client, url: str) -> tuple[list[dict], float]:
    """The rows of a one-URL job, and the peak RSS of the processes started for it."""
    assert stack.proc is not None
    up = stack.proc.pid
    running = set(descendants(up))
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max([peak[0], *(rss_mb(p) for p in set(descendants(up)) - running)])
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return run_job(stack, c, {"input": {"urls": [url]}}), peak[0]
    finally:
        stop.set()
        sampler.join()


def transport_items(stack: Stack, c: httpx.Client) -> None:
    bomb = brotli_bomb(256) or b""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: br\r\n"
    routes = {
        "/bomb": [head + b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb],
        "/upgrade": [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"\r\nafter the upgrade",
            CLOSE,
        ],
    }
    with RawServer(routes) as raw:
        plain_rows, plain_peak = job_with_peak(stack, c, local(raw.url("/plain")))
        rows, peak = job_with_peak(stack, c, local(raw.url("/bomb")))
        print(
            f"1. brotli bomb ({len(bomb)} bytes -> 256 MiB): row {rows[0]['status']} "
            f"{rows[0]['error']}; the job's processes peaked at {peak:.0f} MB RSS (a plain "
            f"page's job: {plain_peak:.0f} MB, row {plain_rows[0]['status']})"
        )
        rows = run_job(stack, c, {"input": {"urls": [local(raw.url("/upgrade"))]}})
        logs = "".join(f.read_text() for f in (stack.data_dir / "logs").glob("*.log"))
        print(
            f"3. 101 Switching Protocols: row {rows[0]['status']} {rows[0]['error']}; "
            f"'Fatal error: protocol.data_received' in the logs: "
            f"{'Fatal error: protocol.data_received' in logs}"
        )
    rows = run_job(stack, c, {"input": {"urls": ["http://[fec0::1]/"]}})
    print(f"5. http://[fec0::1]/: row {rows[0]['status']} {rows[0]['error']}")


def api_items(stack: Stack, c: httpx.Client, site: Site) -> None:
    page = local(site.url("/p/1"))
    for name, headers in (
        ("Content-Length", {"Content-Length": "5"}),
        ("Host", {"Host": "evil.example"}),
        ("DEL in a value", {"X-Note": "a\x7fb"}),
    ):
        r = c.post("/v1/jobs", json={"input": {"urls": [{"url": page, "headers": headers}]}})
        print(f"2. per-URL header {name}: {problem(r)}")

    rows_job = c.post("/v1/jobs", json={"input": {"urls": [page]}}).json()["id"]
    job = stack.wait_job(c, rows_job, FINAL)
    link = httpx.URL(job["download_url"])
    bad = link.copy_merge_params({"sig": "é" * 64})
    r = httpx.get(bad)
    print(f"7. download with a non-ASCII sig: {problem(r)}")
    r = c.get("/v1/jobs", params={"offset": "9223372036854775808"})
    print(f"7. GET /v1/jobs?offset=9223372036854775808: {problem(r)}")

    for url in ("http://2130706433/hook", "http://127.1/hook"):
        r = c.post("/v1/jobs", json={"input": {"urls": [page]}, "webhook": url})
        print(f"10. webhook {url}: {problem(r)}")
    long_url = "http://localhost/" + "a" * 100_000
    r = c.post("/v1/jobs", json={"input": {"urls": [long_url]}})
    print(f"10. a 100 KB URL: {problem(r)}")
    for sel in ("a[[[[", "xpath://a["):
        r = c.post(
            "/v1/jobs", json={"input": {"urls": [page]}, "defaults": {"selectors": {"t": sel}}}
        )
        print(f"10. selector {sel!r}: {problem(r)}")
    body = orjson.dumps({"input": {"urls": [page]}})
    r = c.post(
        "/v1/jobs",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    print(f"10. a job body sent as Content-Encoding: gzip, not gzip: {problem(r)}")
    r = c.post(
        "/v1/uploads",
        files={"file": ("urls.ndjson", b'{"url": "%s"}\n' % page.encode())},
        headers={"Content-Encoding": "gzip"},
    )
    print(f"10. an upload sent as Content-Encoding: gzip, not gzip: {problem(r)}")

    def mode(p: Path) -> str:
        return f"{p.relative_to(stack.data_dir)} {stat.filemode(p.stat().st_mode)}"

    results = [p for p in stack.data_dir.rglob("*") if p.is_file() and rows_job in str(p)]
    files = [stack.data_dir, stack.data_dir / "shoal.db", *results[:1]]
    files += sorted((stack.data_dir / "logs").glob("*.log"))[:1]
    print("10. modes: " + "; ".join(mode(p) for p in files))

    key = stack.keys_create("revoked")
    before = stack.client(key).get("/v1/jobs").status_code
    revoke = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "keys", "revoke", key]
        + ["--data-dir", str(stack.data_dir)],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    after = stack.client(key).get("/v1/jobs").status_code
    print(
        f"10. shoal keys revoke: exit {revoke.returncode}; GET /v1/jobs with the key "
        f"{before} before, {after} after"
    )
    doc = httpx.get(f"{stack.base}/v1/openapi.json").json()
    params = doc["paths"]["/v1/jobs"]["get"]["parameters"]
    status = next(p for p in params if p["name"] == "status")["schema"]
    print(f"10. the document's status filter: {orjson.dumps(status).decode()[:200]}")
    r = c.put(f"/v1/jobs/{rows_job}")
    print(f"10. PUT /v1/jobs/{{id}}: {r.status_code}, Allow: {r.headers.get('allow')}")


def upgrade_item() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "shoal.db"
        con = sqlite3.connect(db)
        con.executescript((ROOT / "tests/fixtures/store_55f2ba1.sql").read_text())
        con.close()
        env = {**os.environ, "SHOAL_DATABASE_URL": f"sqlite:///{db}", "SHOAL_DATA_DIR": tmp}

        def shoal(*args: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "shoal.cli", *args], env=env, capture_output=True, text=True
            )
            lines = (out.stdout + out.stderr).strip().splitlines()
            return f"exit {out.returncode}: {' / '.join(line.strip() for line in lines[-2:])}"

        before = shoal("db", "current")
        upgraded = shoal("db", "upgrade")
        after = shoal("db", "current")
        con = sqlite3.connect(db)
        jobs = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
        nulls = con.execute("SELECT count(*) FROM jobs WHERE resume_count IS NULL").fetchone()[0]
        con.close()
        print(
            f"11. a 55f2ba1 store: db current {before}; db upgrade {upgraded}; db current "
            f"{after}; {jobs} jobs kept, {nulls} with resume_count NULL"
        )


def main() -> None:
    upgrade_item()
    site = Site().start()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(
            Path(tmp), SHOAL_ALLOW_PRIVATE_NETWORKS="0", SHOAL_ALLOW_HOSTS="localhost"
        ).start()
        try:
            with stack.client() as c:
                transport_items(stack, c)
                api_items(stack, c, site)
        finally:
            stack.stop()
            site.stop()


if __name__ == "__main__":
    main()
