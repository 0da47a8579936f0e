"""Change reports: the comparison rules on real part files, the changes file in each output
format, each row's ``change`` in the output, and a job's end writing ``changes``."""

from __future__ import annotations

import csv
import gzip
import io
import json
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal import changes
from shoal.contract import JobSpec
from shoal.finalize import finalize_job
from shoal.output import part_url, piece_url, write_part
from shoal.storage import Storage, get_storage
from shoal.store import utcnow

FIELDS = {"sku": "string", "price": "number", "in_stock": "boolean", "tags": "list[string]"}


def ok(i: int, url: str | None = None, **data: Any) -> dict[str, Any]:
    base = {"sku": f"S{i}", "price": 10.0 + i, "in_stock": True, "tags": ["a"]}
    base.update(data)
    return {
        "url": url or f"https://shop.test/p/{i}",
        "input_index": i,
        "status": "ok",
        "http_status": 200,
        "attempts": 1,
        "credits": 1,
        "data": base,
    }


def err(i: int, url: str | None = None) -> dict[str, Any]:
    return {
        "url": url or f"https://shop.test/p/{i}",
        "input_index": i,
        "status": "error",
        "attempts": 1,
        "credits": 1,
        "error": {"code": "timeout", "message": "slow"},
    }


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(str(tmp_path / "data"))


def run(storage: Storage, job_id: str, *chunks: list[dict[str, Any]]) -> list[str]:
    """Write each list of rows as one part of the job; the local files to scan."""
    for n, rows in enumerate(chunks):
        write_part(storage, part_url(storage, job_id, n), rows)
    return [part_url(storage, job_id, n) for n in range(len(chunks))]


def compare(cur: list[str], prev: list[str], key: str = "url", fields=FIELDS) -> changes.Comparison:
    compared = {f: t for f, t in fields.items() if f != key}
    return changes.compare(
        changes.scan_rows(cur),
        changes.scan_rows(prev),
        key=key,
        fields=compared,
        key_type=None if key == "url" else fields[key],
    )


def rows_of(c: changes.Comparison) -> list[tuple]:
    return [tuple(r) for r in c.changes.with_columns(pl.col("change").cast(pl.String)).rows()]


def labels_of(c: changes.Comparison) -> dict[int, str]:
    return dict(c.labels.with_columns(pl.col("change").cast(pl.String)).rows())


def test_added_removed_changed_unchanged_by_url(storage) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1), ok(2), ok(3, price=5.5)])
    cur = run(
        storage,
        "job_cur",
        [ok(0), ok(1, price=99.0, in_stock=False), ok(3, price=5.5), ok(4), ok(5, tags=["a", "b"])],
    )
    # p/5 is new; p/2 went; p/1 changed two fields
    c = compare(cur, prev)
    assert (c.added, c.removed, c.changed, c.unchanged) == (2, 1, 1, 2)
    assert c.fields == {"sku": 0, "price": 1, "in_stock": 1, "tags": 0}
    assert c.duplicate_keys == 0 and c.null_keys == 0
    assert rows_of(c) == [
        ("https://shop.test/p/1", "changed", "price", "11.0", "99.0", "https://shop.test/p/1"),
        ("https://shop.test/p/1", "changed", "in_stock", "true", "false", "https://shop.test/p/1"),
        ("https://shop.test/p/4", "added", None, None, None, "https://shop.test/p/4"),
        ("https://shop.test/p/5", "added", None, None, None, "https://shop.test/p/5"),
        ("https://shop.test/p/2", "removed", None, None, None, "https://shop.test/p/2"),
    ]
    assert labels_of(c) == {0: "unchanged", 1: "changed", 3: "unchanged", 4: "added", 5: "added"}


def test_a_list_value_that_changed_is_shown_as_json(storage) -> None:
    prev = run(storage, "job_prev", [ok(0)])
    cur = run(storage, "job_cur", [ok(0, tags=["a", "b"], price=None)])
    c = compare(cur, prev)
    assert c.fields["tags"] == 1 and c.fields["price"] == 1  # null against a value differs
    assert [r[2:5] for r in rows_of(c)] == [("price", "10.0", None), ("tags", '["a"]', '["a","b"]')]


def test_errored_rows_are_neither_removed_nor_labelled_and_a_previous_error_is_added(
    storage,
) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1), err(2)])
    cur = run(storage, "job_cur", [ok(0), err(1), ok(2)])
    c = compare(cur, prev)
    # p/1 errored now: not seen, so not removed; p/2 errored before: nothing was delivered
    assert (c.added, c.removed, c.changed, c.unchanged) == (1, 0, 0, 1)
    assert labels_of(c) == {0: "unchanged", 2: "added"}
    assert [r[1] for r in rows_of(c)] == ["added"]


def test_a_field_key_whose_url_errored_now_is_not_removed(storage) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1), ok(2)])
    cur = run(storage, "job_cur", [ok(0), err(1), ok(5, url="https://shop.test/p/2", sku="S2")])
    c = compare(cur, prev, key="sku")
    # S1's page errored: unseen; S2 moved to another input row but is the same key, unchanged
    # but for price (its data says 15.0 now)
    assert (c.added, c.removed, c.changed, c.unchanged) == (0, 0, 1, 1)
    assert rows_of(c) == [("S2", "changed", "price", "12.0", "15.0", "https://shop.test/p/2")]


def test_duplicate_keys_are_counted_and_matched_in_order_never_merged(storage) -> None:
    prev = run(storage, "job_prev", [ok(0, sku="A", price=1.0), ok(1, sku="A", price=2.0)])
    cur = run(
        storage,
        "job_cur",
        [ok(0, sku="A", price=1.0), ok(1, sku="A", price=3.0), ok(2, sku="A", price=4.0)],
    )
    c = compare(cur, prev, key="sku")
    assert c.duplicate_keys == 1
    # first A with first A (same), second with second (2 -> 3), the third A is added
    assert (c.added, c.removed, c.changed, c.unchanged) == (1, 0, 1, 1)
    assert labels_of(c) == {0: "unchanged", 1: "changed", 2: "added"}
    assert [r[:5] for r in rows_of(c)] == [
        ("A", "changed", "price", "2.0", "3.0"),
        ("A", "added", None, None, None),
    ]


def test_rows_without_a_key_are_counted_and_not_compared(storage) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1)])
    cur = run(storage, "job_cur", [ok(0), ok(1, sku=None)])
    c = compare(cur, prev, key="sku")
    assert c.null_keys == 1
    assert (c.added, c.removed, c.changed, c.unchanged) == (0, 1, 0, 1)
    assert labels_of(c) == {0: "unchanged"}


def test_a_value_that_does_not_fit_its_type_is_compared_as_text(storage) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1)])
    cur = run(storage, "job_cur", [ok(0, price="n/a"), ok(1)])  # a string in a number field
    c = compare(cur, prev)
    assert (c.changed, c.unchanged) == (1, 1)
    assert rows_of(c)[0][2:5] == ("price", "10.0", "n/a")


def test_a_chunk_left_in_pieces_counts_each_row_once(storage, tmp_path) -> None:
    prev = run(storage, "job_prev", [ok(0), ok(1), ok(2)])
    # two attempts at chunk 0 wrote row 1 twice: readers keep the first (compacted part)
    write_part(storage, piece_url(storage, "job_cur", 0, "0000000001aa", 1), [ok(0), ok(1)])
    write_part(storage, piece_url(storage, "job_cur", 0, "0000000002bb", 1), [ok(1), ok(2)])
    from shoal.output import part_urls

    work = tmp_path / "work"
    work.mkdir()
    files = changes.local_files(storage, part_urls(storage, "job_cur"), str(work))
    c = compare(files, prev)
    assert (c.added, c.removed, c.changed, c.unchanged) == (0, 0, 0, 3)


def test_nothing_to_compare_on_either_side(storage) -> None:
    c = compare([], [])
    assert (c.added, c.removed, c.changed, c.unchanged) == (0, 0, 0, 0)
    assert c.changes.is_empty() and c.labels.is_empty()


def test_row_labels_look_up_by_input_index(storage) -> None:
    labels = pl.DataFrame(
        {"input_index": [2, 5, 9], "change": ["added", "changed", "unchanged"]},
        schema={"input_index": pl.Int64, "change": changes.ROW_CHANGE},
    )
    changes.write_labels(storage, "job_x", labels)
    got = changes.RowLabels.read(storage, "job_x")
    assert got is not None
    assert got(pa.array([1, 2, 5, 6, 9, 10], pa.int64())).to_pylist() == [
        None, "added", "changed", None, "unchanged", None,
    ]  # fmt: skip
    rows = got.label_rows([{"input_index": 9}, {"input_index": 3}])
    assert rows == [{"input_index": 9, "change": "unchanged"}, {"input_index": 3, "change": None}]
    assert changes.RowLabels.read(storage, "job_none") is None


# --- a job's end -------------------------------------------------------------------------


def _spec(fmt: str = "ndjson", gzip_: bool = True, **extra: Any) -> dict[str, Any]:
    return JobSpec.model_validate(
        {
            "defaults": {},
            "concurrency": 4,
            "output": {"format": fmt, "gzip": gzip_},
            "fields": FIELDS,
            **extra,
        }
    ).model_dump(mode="json")


@pytest.fixture
def nights(settings, alice, make_job):  # type: ignore[no-untyped-def]
    """Two jobs of the account: last night (completed) and tonight (running), with parts."""

    def _make(fmt: str = "ndjson", gzip_: bool = True, key: str = "url", **extra: Any):  # type: ignore[no-untyped-def]
        storage = get_storage(settings)
        prev = make_job(alice.account, status="completed", urls_total=3, spec=_spec(fmt, gzip_))
        run(storage, prev.id, [ok(0), ok(1), ok(2)])
        spec = _spec(fmt, gzip_, compare={"key": key, "previous_job_id": prev.id}, **extra)
        cur = make_job(
            alice.account, status="running", urls_total=4, started_at=utcnow(), spec=spec
        )
        run(storage, cur.id, [ok(0), ok(1, price=20.0), err(2)], [ok(3)])
        return prev, cur

    return _make


def _read_rows(data: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    text = data.decode()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(("fmt", "gzip_"), [("ndjson", True), ("csv", False), ("parquet", False)])
def test_a_job_that_ends_gets_its_change_report_file_and_row_labels(  # type: ignore[no-untyped-def]
    nights, settings, fmt, gzip_
) -> None:
    prev, cur = nights(fmt, gzip_)
    row = finalize_job(cur.id, settings)
    assert row.status == "partial"
    report = row.changes
    assert report is not None
    counts = ("previous_job_id", "added", "removed", "changed", "unchanged")
    assert [report[k] for k in counts] == [prev.id, 1, 0, 1, 1]
    assert report["fields"] == {"sku": 0, "price": 1, "in_stock": 0, "tags": 0}
    assert report["duplicate_keys"] == 0
    name = changes.changes_name(JobSpec.model_validate(cur.spec))
    assert report["download_url"].split("?")[0].endswith(f"/v1/downloads/{cur.id}/{name}")
    storage = get_storage(settings)
    with storage.open(storage.url("jobs", cur.id, "output", name), "rb") as fh:
        data = fh.read()
    if gzip_:
        data = gzip.decompress(data)
    got = _read_rows(data, fmt)
    cols = ("key", "change", "field", "old", "new")
    assert [tuple(r[c] or None for c in cols) for r in got] == [
        ("https://shop.test/p/1", "changed", "price", "11.0", "20.0"),
        ("https://shop.test/p/3", "added", None, None, None),
    ]
    # every row of the output carries its change (null for the errored one)
    [out] = row.outputs
    with storage.open(out["url"], "rb") as fh:
        data = fh.read()
    result = _read_rows(gzip.decompress(data) if gzip_ else data, fmt)
    assert [r["change"] or None for r in result] == ["unchanged", "changed", None, "added"]


def test_without_a_previous_job_there_is_no_report_but_the_column_is_there(  # type: ignore[no-untyped-def]
    settings, alice, make_job
) -> None:
    storage = get_storage(settings)
    spec = _spec("csv", False, compare={"key": "url"})
    cur = make_job(alice.account, status="running", urls_total=1, spec=spec)
    run(storage, cur.id, [ok(0)])
    row = finalize_job(cur.id, settings)
    assert row.status == "completed" and row.changes is None
    with storage.open(row.outputs[0]["url"], "rb") as fh:
        [line] = list(csv.DictReader(io.StringIO(fh.read().decode())))
    assert "change" in line and line["change"] == ""


def test_a_previous_job_of_another_account_is_not_compared(  # type: ignore[no-untyped-def]
    settings, alice, bob, make_job
) -> None:
    storage = get_storage(settings)
    theirs = make_job(bob.account, status="completed", urls_total=1, spec=_spec())
    run(storage, theirs.id, [ok(0)])
    spec = _spec(compare={"key": "url", "previous_job_id": theirs.id})
    cur = make_job(alice.account, status="running", urls_total=1, spec=spec)
    run(storage, cur.id, [ok(0)])
    assert finalize_job(cur.id, settings).changes is None


def test_the_changes_file_downloads_through_its_signed_link(nights, settings, client) -> None:  # type: ignore[no-untyped-def]
    _, cur = nights("csv", False)
    link = finalize_job(cur.id, settings).changes["download_url"]
    got = client.get(link[link.index("/v1/downloads/") :])
    assert got.status_code == 200
    assert [r["change"] for r in csv.DictReader(io.StringIO(got.text))] == ["changed", "added"]
    # another name under the same signature scheme is not the changes file
    bad = client.get(link[link.index("/v1/downloads/") :].replace("changes.csv", "other.csv"))
    assert bad.status_code == 404


def test_results_pages_and_streams_show_each_rows_change(nights, settings, client, alice) -> None:  # type: ignore[no-untyped-def]
    _, cur = nights("ndjson", True)
    page = client.get(f"/v1/jobs/{cur.id}/results", headers=alice.headers).json()
    assert [r["change"] for r in page["results"]] == [None, None, None, None]  # not ended yet
    finalize_job(cur.id, settings)
    page = client.get(f"/v1/jobs/{cur.id}/results?offset=1&limit=2", headers=alice.headers)
    assert [r["change"] for r in page.json()["results"]] == ["changed", None]
    got = client.get(f"/v1/jobs/{cur.id}/results?format=csv", headers=alice.headers)
    assert [r["change"] for r in csv.DictReader(io.StringIO(got.text))] == [
        "unchanged", "changed", "", "added",
    ]  # fmt: skip


def test_a_report_over_parts_on_s3(s3_server) -> None:  # type: ignore[no-untyped-def]
    from shoal.settings import Settings
    from tests.s3server import REGION

    bucket = s3_server.make_bucket()
    s3 = get_storage(
        Settings(
            results_url=f"s3://{bucket}/shoal",
            s3_endpoint_url=s3_server.endpoint_url,
            s3_region=REGION,
            signing_secret="x",
        )
    )
    run(s3, "job_prev", [ok(0), ok(1)], [ok(2)])
    run(s3, "job_cur", [ok(0), ok(1, price=1.0)], [ok(3)])
    spec = JobSpec.model_validate(
        {
            "defaults": {},
            "concurrency": 4,
            "output": {"format": "csv", "gzip": True},
            "fields": FIELDS,
            "compare": {"key": "sku", "fields": ["price"], "previous_job_id": "job_prev"},
        }
    )
    report = changes.report_changes(s3, "job_cur", spec, "job_prev")
    c = report.comparison
    assert (c.added, c.removed, c.changed, c.unchanged, c.fields) == (1, 1, 1, 1, {"price": 1})
    assert report.url == f"s3://{bucket}/shoal/jobs/job_cur/output/changes.csv.gz"
    body = (
        s3_server.client()
        .get_object(Bucket=bucket, Key="shoal/jobs/job_cur/output/changes.csv.gz")["Body"]
        .read()
    )
    got = list(csv.DictReader(io.StringIO(gzip.decompress(body).decode())))
    assert [(r["key"], r["change"], r["old"], r["new"]) for r in got] == [
        ("S1", "changed", "11.0", "1.0"),
        ("S3", "added", "", ""),
        ("S2", "removed", "", ""),
    ]
    labels = changes.RowLabels.read(s3, "job_cur")
    assert labels is not None
    assert labels(pa.array([0, 1, 3], pa.int64())).to_pylist() == ["unchanged", "changed", "added"]


def test_a_conditional_jobs_csv_has_not_modified_before_change(settings, alice, make_job) -> None:  # type: ignore[no-untyped-def]
    storage = get_storage(settings)
    spec = _spec("csv", False, compare={"key": "url"}, conditional=True)
    cur = make_job(alice.account, status="running", urls_total=2, spec=spec)
    run(storage, cur.id, [ok(0), {**ok(1), "not_modified": True, "http_status": 304}])
    row = finalize_job(cur.id, settings)
    with storage.open(row.outputs[0]["url"], "rb") as fh:
        reader = csv.DictReader(io.StringIO(fh.read().decode()))
        got = list(reader)
    assert reader.fieldnames is not None and reader.fieldnames[-2:] == ["not_modified", "change"]
    assert [r["not_modified"] for r in got] == ["false", "true"]


def gone(i: int, status: int = 404, url: str | None = None) -> dict[str, Any]:
    return {**err(i, url), "http_status": status, "error": {"code": "http_4xx", "message": "x"}}


@pytest.mark.parametrize("key", ["url", "sku"])
def test_a_page_that_is_404_or_410_now_is_removed(storage, key) -> None:  # type: ignore[no-untyped-def]
    prev = run(storage, "job_prev", [ok(0), ok(1), ok(2), ok(3)])
    cur = run(storage, "job_cur", [ok(0), gone(1), gone(2, 410), gone(3, 403)])
    c = compare(cur, prev, key=key)
    # 404 and 410 say the product is gone; a 403 says nothing of it: not seen
    assert (c.added, c.removed, c.changed, c.unchanged) == (0, 2, 0, 1)
    assert [r[0] for r in rows_of(c)] == (
        ["https://shop.test/p/1", "https://shop.test/p/2"] if key == "url" else ["S1", "S2"]
    )


def test_a_url_listed_twice_is_matched_in_order_and_other_keys_as_ever(storage) -> None:
    p0 = "https://shop.test/p/0"
    prev = run(storage, "job_prev", [ok(0), ok(1, url=p0, price=2.0), ok(2), ok(3)])
    cur = run(storage, "job_cur", [ok(0), ok(1, url=p0, price=3.0), ok(2), ok(4)])
    c = compare(cur, prev)
    assert c.duplicate_keys == 1
    assert (c.added, c.removed, c.changed, c.unchanged) == (1, 1, 1, 2)
    assert labels_of(c) == {0: "unchanged", 1: "changed", 2: "unchanged", 4: "added"}
    assert [r[:5] for r in rows_of(c)] == [
        (p0, "changed", "price", "2.0", "3.0"),
        ("https://shop.test/p/4", "added", None, None, None),
        ("https://shop.test/p/3", "removed", None, None, None),
    ]


def test_repeated_keys_beside_rows_without_a_key(storage) -> None:
    prev = run(storage, "job_prev", [ok(0, sku="A")])
    cur = run(storage, "job_cur", [ok(0, sku="A"), ok(1, sku="A"), ok(2, sku=None)])
    c = compare(cur, prev, key="sku")
    assert (c.duplicate_keys, c.null_keys) == (1, 1)
    assert (c.added, c.removed, c.changed, c.unchanged) == (1, 0, 0, 1)
    assert labels_of(c) == {0: "unchanged", 1: "added"}


def test_the_single_result_of_a_one_url_job_shows_its_change(
    settings, alice, make_job, client
) -> None:  # type: ignore[no-untyped-def]
    storage = get_storage(settings)
    prev = make_job(alice.account, status="completed", urls_total=1, spec=_spec())
    run(storage, prev.id, [ok(0)])
    spec = _spec(compare={"key": "url", "previous_job_id": prev.id})
    cur = make_job(alice.account, status="running", urls_total=1, spec=spec)
    run(storage, cur.id, [ok(0, price=1.0)])
    finalize_job(cur.id, settings)
    got = client.get(f"/v1/jobs/{cur.id}/result", headers=alice.headers)
    assert got.status_code == 200 and got.json()["change"] == "changed"


def test_the_changes_link_goes_with_the_outputs(nights, settings, store) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from shoal import jobs

    _, cur = nights()
    row = finalize_job(cur.id, settings)
    shown = jobs.to_public(row, store, settings)
    assert (
        shown.changes is not None and shown.changes["download_url"] == row.changes["download_url"]
    )
    store.update_job(cur.id, output_expires_at=utcnow() - timedelta(seconds=1))
    shown = jobs.to_public(store.get_job(cur.id), store, settings)
    assert shown.download_url is None and shown.changes is not None
    assert shown.changes["download_url"] is None and shown.changes["changed"] == 1
