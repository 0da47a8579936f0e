"""Quality gates: each check's measure and limit, null rates over real part files, and a job
whose gate fails ending ``partial`` with ``job.quality_failed`` besides its end event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal import quality
from shoal.changes import Comparison
from shoal.contract import JobSpec, QualitySpec
from shoal.finalize import finalize_job
from shoal.output import part_url, write_part
from shoal.storage import Storage, get_storage
from shoal.store import utcnow

FIELDS = {"name": "string", "price": "number"}


def row(i: int, status: str = "ok", **data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "url": f"https://shop.test/p/{i}",
        "input_index": i,
        "status": status,
        "attempts": 1,
        "credits": 1,
    }
    if status == "ok":
        out["data"] = {"name": f"P{i}", "price": 1.0 + i, **data}
    else:
        out["error"] = {"code": "timeout", "message": "slow"}
    return out


def test_each_check_fails_past_its_limit_and_names_itself() -> None:
    spec = QualitySpec(
        min_rows=10,
        max_error_rate=0.1,
        max_null_rate={"price": 0.02, "name": 0.5},
        max_changed_rate=0.25,
    )
    m = quality.Measures(
        rows=8, errored=2, ok=6, nulls={"price": 2, "name": 0}, compared=4, changed=2
    )
    got = quality.check(spec, m)
    assert got == {
        "passed": False,
        "failed": [
            {"check": "min_rows", "limit": 10, "value": 8},
            {"check": "max_error_rate", "limit": 0.1, "value": 0.25},
            {"check": "max_null_rate.price", "limit": 0.02, "value": 0.333333},
            {"check": "max_changed_rate", "limit": 0.25, "value": 0.5},
        ],
    }
    assert quality.describe(got) == (
        "quality failed: min_rows 8 < 10, max_error_rate 0.25 > 0.1, "
        "max_null_rate.price 0.333333 > 0.02, max_changed_rate 0.5 > 0.25"
    )


def test_at_the_limit_passes() -> None:
    spec = QualitySpec(min_rows=4, max_error_rate=0.25, max_null_rate={"price": 0.5})
    m = quality.Measures(rows=4, errored=1, ok=3, nulls={"price": 1})
    assert quality.check(spec, m) == {"passed": True, "failed": []}
    assert quality.describe({"passed": True, "failed": []}) is None


def test_what_cannot_be_measured_is_not_checked() -> None:
    spec = QualitySpec(max_null_rate={"price": 0.0}, max_changed_rate=0.0)
    # no ok rows: no null rate; no comparison (or none in both runs): no changed rate
    assert quality.check(spec, quality.Measures(rows=3, errored=3, ok=0, nulls={"price": 0}))[
        "passed"
    ]
    assert quality.check(spec, quality.Measures(rows=0, errored=0, ok=0, compared=0, changed=0))[
        "passed"
    ]


def test_null_rate_counts_ok_rows_only(tmp_path) -> None:
    storage = Storage(str(tmp_path / "data"))
    rows = [row(0), row(1, price=None), row(2, status="error"), row(3)]
    rows[3]["data"].pop("price")  # absent counts as null
    write_part(storage, part_url(storage, "job_q", 0), rows)
    ok, nulls = quality.null_counts(storage, [part_url(storage, "job_q", 0)], FIELDS)
    assert ok == 3 and nulls == {"name": 0, "price": 2}


def test_changed_rate_comes_from_the_comparison(tmp_path) -> None:
    storage = Storage(str(tmp_path / "data"))
    comparison = Comparison(added=5, removed=5, changed=3, unchanged=1)
    m = quality.measure(
        storage,
        [],
        QualitySpec(max_changed_rate=0.5),
        FIELDS,
        rows=10,
        errored=0,
        comparison=comparison,
    )
    assert (m.compared, m.changed) == (4, 3)  # added and removed keys were not compared
    assert quality.check(QualitySpec(max_changed_rate=0.5), m)["failed"] == [
        {"check": "max_changed_rate", "limit": 0.5, "value": 0.75}
    ]


@pytest.fixture
def gated(settings, alice, make_job):  # type: ignore[no-untyped-def]
    def _make(gates: dict[str, Any], rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
        spec = JobSpec.model_validate(
            {
                "defaults": {},
                "concurrency": 4,
                "output": {"format": "ndjson"},
                "fields": FIELDS,
                "quality": gates,
                "webhook": {
                    "url": "https://hooks.example/jobs",
                    "events": [
                        "job.completed",
                        "job.cancelled",
                        "job.failed",
                        "job.quality_failed",
                    ],
                },
            }
        ).model_dump(mode="json")
        job = make_job(
            alice.account, status="running", urls_total=len(rows), started_at=utcnow(), spec=spec
        )
        storage = get_storage(settings)
        write_part(storage, part_url(storage, job.id, 0), rows)
        return job

    return _make


def test_a_failed_gate_turns_completed_into_partial_and_sends_quality_failed(  # type: ignore[no-untyped-def]
    gated, settings, store
) -> None:
    job = gated({"max_null_rate": {"price": 0.02}}, [row(0), row(1, price=None), row(2)])
    ended = finalize_job(job.id, settings)
    assert ended.status == "partial" and ended.urls_errored == 0
    assert ended.quality == {
        "passed": False,
        "failed": [{"check": "max_null_rate.price", "limit": 0.02, "value": 0.333333}],
    }
    events = {e.type: json.loads(e.payload) for e in store.webhook_log(job.id)[0]}
    assert set(events) == {"job.completed", "job.quality_failed"}
    for etype, body in events.items():
        assert body["type"] == etype and body["data"]["status"] == "partial"
        assert body["data"]["quality"] == ended.quality
    assert events["job.completed"]["id"] != events["job.quality_failed"]["id"]


def test_a_passing_gate_leaves_the_status_and_sends_only_the_end_event(  # type: ignore[no-untyped-def]
    gated, settings, store
) -> None:
    job = gated({"min_rows": 2, "max_error_rate": 0.5}, [row(0), row(1, status="error")])
    ended = finalize_job(job.id, settings)
    assert ended.status == "partial"  # an errored row: partial as ever
    assert ended.quality == {"passed": True, "failed": []}
    assert [e.type for e in store.webhook_log(job.id)[0]] == ["job.completed"]
    clean = gated({"min_rows": 1}, [row(0)])
    assert finalize_job(clean.id, settings).status == "completed"


def test_a_cancelled_job_is_not_gated(gated, settings) -> None:  # type: ignore[no-untyped-def]
    job = gated({"min_rows": 100}, [row(0)])
    from shoal.store import get_store

    get_store(settings).update_job(job.id, urls_total=5)
    ended = finalize_job(job.id, settings, cancelled=True)
    assert ended.status == "cancelled" and ended.quality is None


def test_the_flow_runs_state_names_the_failed_checks(gated, settings) -> None:  # type: ignore[no-untyped-def]
    from flows.scrape_job import _state_for

    job = gated({"max_null_rate": {"price": 0.02}}, [row(0), row(1, price=None)])
    state = _state_for(finalize_job(job.id, settings))
    assert state.is_completed() and state.name == "Partial"
    assert state.message == "2 URLs, 0 errored; quality failed: max_null_rate.price 0.5 > 0.02"
    passing = gated({"max_null_rate": {"price": 0.9}}, [row(0)])
    assert _state_for(finalize_job(passing.id, settings)).message == "1 URLs, 0 errored"
