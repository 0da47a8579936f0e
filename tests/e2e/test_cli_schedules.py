"""``shoal schedules`` as a user runs it (a subprocess) against the real stack's
``/v1/schedules``: ``apply FILE.yaml`` creates, updates (only what differs) and deletes by name,
``--dry-run`` changes nothing, applying twice changes nothing the second time, an empty file
deletes nothing without ``--allow-empty``, a 422 names the field; list, get, pause, resume and
run by name. Each test works in an account of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.client import Client
from tests.e2e.stack import Stack
from tests.sites.catalog import Site


@pytest.fixture
def client(stack: Stack, key: str) -> Iterator[Client]:
    with Client(stack.base, key) as c:
        yield c


def shoal(stack: Stack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``shoal schedules ARGS`` in the stack's folder (a download without --out lands there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "PREFECT_"))}
    env.update(SHOAL_URL=stack.base, SHOAL_API_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", "schedules", *args],
        cwd=stack.data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def job(*paths: str) -> dict[str, Any]:
    urls = [f"https://shop.example{p}" for p in paths]
    return {"input": {"urls": urls}, "defaults": {"extract": {"name": "string", "price": "number"}}}


NIGHTLY = {
    "name": "nightly-catalog",
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "job": {**job("/p/1", "/p/2"), "output": {"format": "parquet"}},
    "compare": {"key": "url", "fields": ["price"]},
    "conditional": True,
    "quality": {"min_rows": 2, "max_null_rate": {"price": 0.05}},
}
HOURLY = {"name": "hourly-prices", "interval_s": 3600, "job": job("/p/3")}


def write(path: Path, schedules: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump(schedules, sort_keys=False))
    return path


def state(client: Client) -> dict[str, dict[str, Any]]:
    """Every schedule of the account by name, as the API shows it (next_runs aside: time moves)."""
    return {
        s.name: s.model_dump(mode="json", exclude={"next_runs"}) for s in client.schedules.all()
    }


def test_apply_creates_updates_and_deletes_by_name(
    stack: Stack, key: str, client: Client, tmp_path: Path
) -> None:
    first = write(tmp_path / "first.yaml", [NIGHTLY, HOURLY])
    done = shoal(stack, key, "apply", str(first))
    assert done.returncode == 0, done.stderr
    assert "Applied: 2 to create, 0 to update, 0 to delete, 0 unchanged." in done.stdout
    made = state(client)
    assert set(made) == {"nightly-catalog", "hourly-prices"}
    nightly = made["nightly-catalog"]
    assert (nightly["cron"], nightly["timezone"], nightly["conditional"]) == (
        "0 2 * * *",
        "Europe/Berlin",
        True,
    )
    assert nightly["quality"]["max_null_rate"] == {"price": 0.05}
    assert made["hourly-prices"]["interval_s"] == 3600

    again = shoal(stack, key, "apply", str(first))
    assert again.returncode == 0, again.stderr
    assert "0 to create, 0 to update, 0 to delete, 2 unchanged" in again.stdout
    assert state(client) == made  # nothing was PATCHed: nothing moved

    changed = {**NIGHTLY, "interval_s": 7200, "job": job("/p/1", "/p/2", "/p/9")}
    del changed["cron"], changed["timezone"], changed["quality"]
    weekly = {"name": "weekly", "cron": "0 4 * * 1", "job": job("/p/4"), "paused": True}
    second = write(tmp_path / "second.yaml", [changed, weekly])
    out = shoal(stack, key, "apply", str(second), "--json")
    assert out.returncode == 0, out.stderr
    plan = {c["name"]: c for c in json.loads(out.stdout)["changes"]}
    assert {n: c["action"] for n, c in plan.items()} == {
        "nightly-catalog": "update",
        "weekly": "create",
        "hourly-prices": "delete",
    }
    assert set(plan["nightly-catalog"]["fields"]) == {"interval_s", "job", "quality"}
    after = state(client)
    assert set(after) == {"nightly-catalog", "weekly"}
    n = after["nightly-catalog"]
    assert n["id"] == nightly["id"] and n["created_at"] == nightly["created_at"]  # updated
    assert (n["cron"], n["interval_s"], n["quality"]) == (None, 7200, None)
    assert n["job"]["input"]["urls"][-1] == "https://shop.example/p/9"
    assert n["compare"]["fields"] == ["price"] and n["conditional"] is True  # untouched
    assert after["weekly"]["paused"] is True
    # the file leaves `paused` out of nightly: a pause made elsewhere is kept
    client.schedules.pause(n["id"])
    kept = shoal(stack, key, "apply", str(second))
    assert "0 to update" in kept.stdout and client.schedules.get(n["id"]).paused is True


def test_dry_run_changes_nothing(stack: Stack, key: str, client: Client, tmp_path: Path) -> None:
    assert (
        shoal(stack, key, "apply", str(write(tmp_path / "a.yaml", [NIGHTLY, HOURLY]))).returncode
        == 0
    )
    before = state(client)
    other = write(
        tmp_path / "b.yaml", [{**HOURLY, "interval_s": 600}, {**HOURLY, "name": "new-one"}]
    )
    dry = shoal(stack, key, "apply", str(other), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert any(
        line.startswith("~ update") and "hourly-prices" in line and "interval_s" in line
        for line in lines
    )
    assert any(line.startswith("+ create") and "new-one" in line for line in lines)
    assert any(line.startswith("- delete") and "nightly-catalog" in line for line in lines)
    assert (
        "1 to create, 1 to update, 1 to delete, 0 unchanged (dry run: nothing changed)"
        in dry.stdout
    )
    assert state(client) == before

    kept = shoal(stack, key, "apply", str(other), "--no-prune", "--dry-run", "--json")
    actions = {c["name"]: c["action"] for c in json.loads(kept.stdout)["changes"]}
    assert actions["nightly-catalog"] == "unchanged"

    empty = tmp_path / "empty.yaml"
    empty.write_text("[]\n")
    refused = shoal(stack, key, "apply", str(empty))
    assert refused.returncode == 1 and "--allow-empty" in refused.stderr
    assert state(client) == before
    wiped = shoal(stack, key, "apply", str(empty), "--allow-empty")
    assert wiped.returncode == 0 and state(client) == {}


def test_an_invalid_schedule_is_named_and_exits_1(
    stack: Stack, key: str, client: Client, tmp_path: Path
) -> None:
    bad = {
        **HOURLY,
        "name": "bad",
        "interval_s": None,
        "cron": "61 * * * *",
        "timezone": "Mars/Base",
    }
    done = shoal(stack, key, "apply", str(write(tmp_path / "bad.yaml", [HOURLY, bad])))
    assert done.returncode == 1
    assert "422" in done.stderr and "cron" in done.stderr and "timezone" in done.stderr
    assert set(state(client)) == {"hourly-prices"}  # the steps before it stay done

    unreadable = tmp_path / "dup.yaml"
    unreadable.write_text("- name: a\n  interval_s: 60\n- name: a\n  interval_s: 60\n")
    dup = shoal(stack, key, "apply", str(unreadable))
    assert dup.returncode == 2 and "given twice" in dup.stderr


def test_list_get_pause_resume_run_by_name(
    stack: Stack, key: str, client: Client, tmp_path: Path
) -> None:
    made = client.schedules.create(HOURLY)
    listed = shoal(stack, key, "list")
    assert listed.returncode == 0, listed.stderr
    assert made.id in listed.stdout and "every 3600 s" in listed.stdout

    got = json.loads(shoal(stack, key, "get", "hourly-prices", "--json").stdout)
    assert got["id"] == made.id and len(got["next_runs"]) == 5

    paused = shoal(stack, key, "pause", "hourly-prices")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert client.schedules.get(made.id).paused is True
    resumed = json.loads(shoal(stack, key, "resume", made.id, "--json").stdout)
    assert resumed["paused"] is False

    ran = json.loads(shoal(stack, key, "run", "hourly-prices", "--json").stdout)
    assert ran["id"].startswith("job_")
    assert client.get(ran["id"]).model_dump()["schedule_id"] == made.id
    runs = client.list(schedule_id=made.id)
    assert [j.id for j in runs.jobs] == [ran["id"]]

    missing = shoal(stack, key, "get", "no-such-schedule")
    assert missing.returncode == 1 and "no schedule is called 'no-such-schedule'" in missing.stderr
    other = shoal(stack, stack.key, "get", made.id)  # another account's schedule
    assert other.returncode == 1 and "404" in other.stderr


def test_run_wait_says_the_change_report_and_failed_checks(
    stack: Stack, key: str, tmp_path: Path, site: Site
) -> None:
    urls = [site.url(f"/p/{n}") for n in (1, 2, 3)] + [site.url("/status/404/1")]
    catalog = {
        "name": "catalog",
        "interval_s": 3600,
        "paused": True,
        "job": {"input": {"urls": urls}, "defaults": {"extract": {"name": "string"}}},
        "compare": {"key": "url"},
        "quality": {"max_error_rate": 0.1},
    }
    assert shoal(stack, key, "apply", str(write(tmp_path / "c.yaml", [catalog]))).returncode == 0
    first = shoal(stack, key, "run", "catalog", "--wait", "--out", str(tmp_path / "1.ndjson"))
    assert first.returncode == 0, first.stderr  # partial: a result, exit 0
    assert "partial: 4 URLs, 1 errored" in first.stderr
    assert "quality checks failed: max_error_rate 0.25 (limit 0.1)" in first.stderr
    assert "changes since" not in first.stderr  # nothing to compare with yet
    rows = [json.loads(line) for line in (tmp_path / "1.ndjson").read_text().splitlines()]
    assert [r["data"]["name"] for r in rows[:3]] == ["Product 1", "Product 2", "Product 3"]

    second = shoal(stack, key, "run", "catalog", "--wait", "--json")
    job = json.loads(second.stdout)
    assert job["run_number"] == 2 and job["changes"]["unchanged"] == 3
    assert (stack.data_dir.parent / f"{job['id']}.ndjson").is_file()  # the default name
    third = shoal(stack, key, "run", "catalog", "--wait", "--out", str(tmp_path / "3.ndjson"))
    assert f"changes since {job['id']}: 0 added, 0 removed, 0 changed, 3 unchanged" in third.stderr
