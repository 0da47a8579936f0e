"""The plan of ``shoal schedules apply``: what differs is judged through the contract's models
(defaults the server echoes are no change), a field left out of the file goes back to its
default except ``paused``, a switch between cron and interval sends only the new one, pruning
deletes what the file does not name, and a bad file is refused naming the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.client import FileError, Schedule, plan, read_file

JOB = {"input": {"urls": ["https://shop.example/p/1"]}, "defaults": {"extract": {"p": "number"}}}


def server(name: str, **fields: Any) -> Schedule:
    """A schedule as the API shows it: the job with its defaults filled in, as it may be."""
    echoed_job = {
        **JOB,
        "concurrency": 32,
        "priority": "normal",
        "defaults": {**JOB["defaults"], "render": False, "formats": ["data"], "timeout_s": 30},
    }
    base: dict[str, Any] = {
        "id": f"sch_{name}",
        "name": name,
        "cron": "0 2 * * *",
        "timezone": "UTC",
        "interval_s": None,
        "job": echoed_job,
        "compare": None,
        "conditional": False,
        "quality": None,
        "paused": False,
        "created_at": "2026-12-05T10:00:00Z",
        "next_runs": [],
        "last_job_id": None,
        "runs": 0,
        "skipped_runs": 0,
    }
    return Schedule.model_validate({**base, **fields})


def test_the_same_schedule_with_defaults_echoed_is_unchanged() -> None:
    todo = plan([{"name": "a", "cron": "0 2 * * *", "job": JOB}], [server("a")])
    assert [(c.action, c.name) for c in todo.changes] == [("unchanged", "a")]
    assert todo.empty


def test_only_what_differs_is_patched_and_named_to_the_leaf() -> None:
    wanted = {
        "name": "a",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "job": {**JOB, "defaults": {"extract": {"p": "number", "sku": "string"}}},
        "compare": {"key": "sku"},
    }
    (change,) = plan([wanted], [server("a")]).changes
    assert change.action == "update" and change.schedule_id == "sch_a"
    assert change.fields == {k: wanted[k] for k in ("cron", "timezone", "job", "compare")}
    assert change.differs == [
        "compare",
        "cron",
        "job.defaults.extract.sku",
        "timezone",
    ]


def test_a_field_left_out_goes_back_to_its_default_but_paused_stays() -> None:
    have = server(
        "a",
        quality={"min_rows": 10},
        conditional=True,
        compare={"key": "url"},
        paused=True,
    )
    (change,) = plan([{"name": "a", "cron": "0 2 * * *", "job": JOB}], [have]).changes
    assert change.fields == {"quality": None, "conditional": False, "compare": None}
    (again,) = plan(
        [{"name": "a", "cron": "0 2 * * *", "job": JOB, "paused": False}], [have]
    ).changes
    assert again.fields["paused"] is False


def test_cron_to_interval_sends_the_interval_alone() -> None:
    have = server("a", timezone="Europe/Berlin")
    (change,) = plan([{"name": "a", "interval_s": 3600, "job": JOB}], [have]).changes
    assert change.fields == {"interval_s": 3600}
    back = server("a", cron=None, timezone=None, interval_s=3600)
    (change,) = plan([{"name": "a", "cron": "0 2 * * *", "job": JOB}], [back]).changes
    assert change.fields == {"cron": "0 2 * * *"}  # no timezone is UTC, on both sides
    berlin = server("a", timezone="Europe/Berlin")
    (change,) = plan([{"name": "a", "cron": "0 2 * * *", "job": JOB}], [berlin]).changes
    assert change.fields == {"timezone": "UTC"}  # left out of the file: back to UTC
    same = plan([{"name": "a", "interval_s": 3600, "job": JOB}], [back])
    assert same.empty


def test_create_delete_and_no_prune() -> None:
    wanted = [{"name": "new", "interval_s": 600, "job": JOB}, {"name": "kept", "job": JOB}]
    current = [server("kept"), server("gone")]
    pruned = plan(wanted, current)
    assert [(c.action, c.name) for c in pruned.changes] == [
        ("create", "new"),
        ("update", "kept"),  # the file gives no cron: cleared (the server will say it needs one)
        ("delete", "gone"),
    ]
    assert pruned.of("create")[0].fields == wanted[0]
    assert pruned.summary() == "1 to create, 1 to update, 1 to delete, 0 unchanged"
    kept = plan(wanted, current, prune=False)
    assert [c.action for c in kept.changes] == ["create", "update", "unchanged"]


def test_a_name_twice_on_the_server_is_refused() -> None:
    with pytest.raises(FileError, match="two schedules on the server are called 'a'"):
        plan([], [server("a"), server("a", id="sch_other")])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- name: a\n  job: {}\n- name: a\n  job: {}\n", "the name 'a' is given twice"),
        ("- cron: '0 2 * * *'\n", r"schedule \[0\] has no `name`"),
        ("name: a\n", "expected a list of schedules"),
        ("- just a string\n", r"schedule \[0\] is not a mapping"),
        ("- name: [unclosed\n", "not YAML"),
    ],
)
def test_bad_files_are_refused_naming_why(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(FileError, match=problem):
        read_file(f)


def test_a_file_is_a_list_or_a_schedules_mapping(tmp_path: Path) -> None:
    listed, mapped, empty = tmp_path / "l.yaml", tmp_path / "m.yaml", tmp_path / "e.yaml"
    listed.write_text("- name: a\n  interval_s: 60\n  job: {urls: ['https://x.example/']}\n")
    mapped.write_text(
        "schedules:\n" + "".join("  " + line + "\n" for line in listed.read_text().splitlines())
    )
    empty.write_text("")
    assert (
        read_file(listed)
        == read_file(mapped)
        == [{"name": "a", "interval_s": 60, "job": {"urls": ["https://x.example/"]}}]
    )
    assert read_file(empty) == []
