"""``shoal jobs`` as a user runs it (a subprocess) against the real stack and the catalog site:
``submit urls.csv --extract ... --wait --out FILE`` ends with the downloaded file holding the
true values, an invalid field is named on stderr with a non-zero exit, and list, get,
download, results, cancel and retry work on the jobs it made."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from tests.e2e.stack import Stack
from tests.sites.catalog import Site, price_of


def shoal(
    stack: Stack, cwd: Path, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_"))}
    env.update(SHOAL_URL=stack.base, COLUMNS="200")
    if key != "":
        env["SHOAL_API_KEY"] = key or stack.key
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", "jobs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def url_file(site: Site, path: Path, numbers: range) -> Path:
    path.write_text("url\n" + "".join(site.url(f"/p/{n}") + "\n" for n in numbers))
    return path


def check(rows: list[dict], numbers: range) -> None:
    assert [(r["name"], float(r["price"])) for r in rows] == [
        (f"Product {n}", price_of(n)) for n in numbers
    ]


def test_submit_wait_downloads_the_result(stack: Stack, site: Site, tmp_path: Path) -> None:
    urls = url_file(site, tmp_path / "urls.csv", range(60))
    done = shoal(
        stack,
        tmp_path,
        "submit",
        str(urls),
        "--extract",
        "name:string,price:number",
        "--selector",
        "name=h1.name",
        "--selector",
        "price=span.price",
        "--format",
        "csv",
        "--wait",
        "--out",
        "catalog.csv",
    )
    assert done.returncode == 0, done.stderr
    assert "submitted job_" in done.stderr
    assert "completed: 60 URLs, 0 errored" in done.stderr
    assert "60/60" in done.stderr  # the bar's last state
    assert "saved catalog.csv" in done.stderr
    check(list(csv.DictReader(io.StringIO((tmp_path / "catalog.csv").read_text()))), range(60))


def test_submit_wait_json_names_the_saved_file(stack: Stack, site: Site, tmp_path: Path) -> None:
    urls = [site.url(f"/p/{n}") for n in range(5)]
    done = shoal(stack, tmp_path, "submit", *urls, "-e", "name,price:number", "-f", "parquet")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert job_id.startswith("job_") and "queued" in done.stdout

    waited = shoal(stack, tmp_path, "submit", *urls, "-e", "name,price:number", "-w", "--json")
    assert waited.returncode == 0, waited.stderr
    job = json.loads(waited.stdout)
    assert job["status"] == "completed" and job["saved"] == [f"{job['id']}.ndjson"]
    rows = [json.loads(line) for line in (tmp_path / job["saved"][0]).read_text().splitlines()]
    check([r["data"] for r in rows], range(5))

    # the job submitted without --wait, waited and downloaded apart
    deadline = time.monotonic() + 60
    got = shoal(stack, tmp_path, "download", job_id, "--out", "first.parquet")
    while got.returncode != 0 and time.monotonic() < deadline:  # it may still be running
        assert "no result to download" in got.stderr, got.stderr
        got = shoal(stack, tmp_path, "download", job_id, "--out", "first.parquet")
    assert got.returncode == 0, got.stderr
    check(pl.read_parquet(tmp_path / "first.parquet").to_dicts(), range(5))


def test_an_invalid_field_is_named_and_exits_1(stack: Stack, tmp_path: Path) -> None:
    done = shoal(
        stack, tmp_path, "submit", "http://127.0.0.1/x", "-e", "price:money", "--concurrency", "0"
    )
    assert done.returncode == 1
    assert "422 Invalid input" in done.stderr
    assert "defaults.extract.price:" in done.stderr and "concurrency:" in done.stderr
    assert done.stdout == ""

    bad_key = shoal(stack, tmp_path, "list", key="nope")
    assert bad_key.returncode == 1 and "401" in bad_key.stderr

    usage = shoal(stack, tmp_path, "submit", "no-such-file.csv")
    assert usage.returncode == 2 and "no such file" in usage.stderr


def test_list_get_results_cancel_retry(stack: Stack, site: Site, tmp_path: Path) -> None:
    urls = [site.url("/p/3"), site.url("/status/404/1")]
    done = shoal(stack, tmp_path, "submit", *urls, "-e", "name,price:number", "-w", "--json")
    job = json.loads(done.stdout)
    assert job["status"] == "partial" and done.returncode == 0  # partial is a result: exit 0

    listed = json.loads(shoal(stack, tmp_path, "list", "--status", "partial", "--json").stdout)
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    table = shoal(stack, tmp_path, "list").stdout
    assert job["id"] in table and "partial" in table

    shown = shoal(stack, tmp_path, "get", job["id"])
    assert shown.returncode == 0 and "urls_errored" in shown.stdout and "partial" in shown.stdout

    rows = shoal(stack, tmp_path, "results", job["id"]).stdout.splitlines()
    assert [json.loads(r)["status"] for r in rows] == ["ok", "error"]
    assert (
        len(shoal(stack, tmp_path, "results", job["id"], "--limit", "1").stdout.splitlines()) == 1
    )

    ended = shoal(stack, tmp_path, "cancel", job["id"])
    assert ended.returncode == 1 and "409" in ended.stderr

    retried = shoal(stack, tmp_path, "retry", job["id"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["parent_job_id"] == job["id"]


def test_the_local_stack_key_is_found_without_shoal_api_key(stack: Stack, tmp_path: Path) -> None:
    alone = shoal(stack, tmp_path, "list", "--json", key="")
    assert alone.returncode == 1 and "no API key" in alone.stderr
    env_dir = shoal(stack, stack.data_dir.parent, "list", "--json", key="")
    (stack.data_dir.parent / ".shoal").symlink_to(stack.data_dir)  # as `shoal up` in this folder
    try:
        found = shoal(stack, stack.data_dir.parent, "list", "--json", key="")
    finally:
        (stack.data_dir.parent / ".shoal").unlink()
    assert env_dir.returncode == 1
    assert found.returncode == 0, found.stderr
    assert "jobs" in json.loads(found.stdout)
