"""What the run's page shows of a change report and of quality gates (shoal.report)."""

from __future__ import annotations

import pytest

from shoal.finalize import finalize_job
from shoal.report import RunReport, change_table, changes_sample, summary_markdown
from shoal.storage import get_storage
from tests.unit.test_changes import nights  # noqa: F401  (the fixture)


@pytest.mark.parametrize(("fmt", "gzip_"), [("ndjson", True), ("csv", True), ("parquet", False)])
def test_the_table_shows_top_fields_then_added_and_removed_with_examples(  # type: ignore[no-untyped-def]
    nights,  # noqa: F811
    settings,
    fmt,
    gzip_,
) -> None:
    _, cur = nights(fmt, gzip_)
    row = finalize_job(cur.id, settings)
    sample = changes_sample(get_storage(settings), row)
    assert [(r["change"], r["field"]) for r in sample] == [("changed", "price"), ("added", None)]
    assert change_table(row.changes, sample) == [
        {
            "change": "changed",
            "field": "price",
            "keys": 1,
            "example key": "https://shop.test/p/1",
            "old": "11.0",
            "new": "20.0",
        },
        {
            "change": "added",
            "field": "",
            "keys": 1,
            "example key": "https://shop.test/p/3",
            "old": "",
            "new": "",
        },
    ]


def test_fields_are_ranked_by_count_and_cut_at_top() -> None:
    changes = {"fields": {"a": 1, "b": 5, "c": 0, "d": 3}, "added": 0, "removed": 2}
    rows = change_table(changes, [], top=2)
    assert [(r["change"], r["field"], r["keys"]) for r in rows] == [
        ("changed", "b", 5),
        ("changed", "d", 3),
        ("removed", "", 2),
    ]


def test_the_summary_names_failed_gates_and_the_changes(nights, settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, cur = nights()
    row = finalize_job(cur.id, settings)
    row.quality = {
        "passed": False,
        "failed": [{"check": "max_null_rate.price", "limit": 0.02, "value": 0.31}],
    }
    text = summary_markdown(row, RunReport(), account_name="a", output_location=None)
    assert "| quality | quality failed: max_null_rate.price 0.31 > 0.02 |" in text
    assert "1 added, 0 removed, 1 changed, 1 unchanged" in text
