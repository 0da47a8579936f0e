import csv
import gzip
import io
import json
import os

import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from shoal.output import (
    build_output,
    column_names,
    count_rows,
    read_results,
    stream_output,
    write_part,
)
from shoal.storage import Storage

FIELDS = {"name": "string", "price": "number", "stock": "integer", "status": "string"}


def _row(i, **kw):
    row = {
        "url": f"https://store.test/p/{i}",
        "input_index": i,
        "status": "ok",
        "http_status": 200,
        "final_url": f"https://store.test/p/{i}",
        "fetched_at": "2026-05-12T22:00:14Z",
        "elapsed_ms": 10 + i,
        "attempts": 1,
        "credits": 1,
        "content_hash": f"sha256:{i:04x}",
        "meta": None,
        "data": {"name": f"Product {i}", "price": 1.5 + i, "stock": i, "status": "in stock"},
        "error": None,
    }
    row.update(kw)
    return row


def _error_row(i):
    return _row(
        i,
        status="error",
        http_status=None,
        final_url=None,
        content_hash=None,
        data=None,
        error={"code": "timeout", "message": "slow"},
    )


@pytest.fixture
def storage(tmp_path):
    return Storage(str(tmp_path / "results"))


def _parts(storage, rows, per_part):
    urls = []
    for p in range(0, len(rows), per_part):
        url = storage.url("jobs", "j1", "parts", f"{p // per_part:06d}.parquet")
        assert write_part(storage, url, rows[p : p + per_part]) > 0
        urls.append(url)
    return urls


def _read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.read().decode()


def _mixed_rows(n=25):
    rows = []
    for i in range(n):
        if i % 7 == 3:
            rows.append(_error_row(i))
        elif i % 5 == 0:
            rows.append(
                _row(
                    i,
                    meta={"sku": i, "tags": ["a"]},
                    html=f"<h1>{i}</h1>",
                    markdown=f"# {i}",
                    text=f'line\n{i}, "quoted"',
                    links=[f"https://store.test/{i}"],
                    metadata={"title": f"T{i}"},
                )
            )
        elif i % 5 == 1:
            rows.append(_row(i, meta="plain string meta"))
        else:
            rows.append(_row(i))
    return rows


@pytest.mark.parametrize("gz", [False, True])
def test_ndjson_round_trip_matches_contract_shape(storage, gz):
    rows = _mixed_rows()
    parts = _parts(storage, rows, 6)
    [out] = build_output(
        storage, parts, storage.url("jobs", "j1", "output"), fmt="ndjson", gzip=gz, fields={}
    )
    assert out.url.endswith("result.ndjson.gz" if gz else "result.ndjson")
    assert out.rows == len(rows) and out.size_bytes == os.path.getsize(out.url)
    lines = _read_text(out.url).splitlines()
    got = [json.loads(line) for line in lines]
    assert got == rows  # same keys, same values, format keys only where present
    assert list(got[0]) == list(rows[0])  # contract key order
    assert got[3]["error"] == {"code": "timeout", "message": "slow"} and got[3]["data"] is None


def test_ndjson_accepts_pydantic_rows_and_datetimes(storage):
    from datetime import UTC, datetime

    from shoal.contract import PageResult

    model = PageResult(
        url="https://x.test/",
        input_index=0,
        status="ok",
        fetched_at=datetime(2026, 5, 12, 22, 0, 14, tzinfo=UTC),
        data={"a": 1},
    )
    parts = _parts(storage, [model], 1)
    rows, total = read_results(storage, parts, limit=10, offset=0)
    assert total == 1 and rows[0]["fetched_at"] == "2026-05-12T22:00:14Z"
    assert rows[0]["data"] == {"a": 1}


def test_order_preserved_across_many_parts(storage):
    rows = [_row(i) for i in range(3000)]
    parts = _parts(storage, rows, 97)  # parts of uneven row groups
    for fmt in ("ndjson", "csv", "parquet"):
        files = build_output(
            storage, parts, storage.url("o", fmt), fmt=fmt, gzip=False, fields=FIELDS
        )
        if fmt == "ndjson":
            idx = [json.loads(x)["input_index"] for x in _read_text(files[0].url).splitlines()]
        elif fmt == "csv":
            idx = pl.read_csv(files[0].url)["input_index"].to_list()
        else:
            idx = pq.read_table(files[0].url).column("input_index").to_pylist()
        assert idx == list(range(3000)), fmt


def test_parquet_typed_columns_and_collision_prefix(storage):
    rows = [
        _row(0),
        _row(1, data={"name": 12, "price": "abc", "stock": 2.5, "status": {"x": 1}}),
        _row(2, data={"price": "7.25", "stock": "9"}),
        _error_row(3),
    ]
    parts = _parts(storage, rows, 2)
    [out] = build_output(storage, parts, storage.url("o"), fmt="parquet", gzip=True, fields=FIELDS)
    assert out.url.endswith("result.parquet")  # gzip ignored for parquet
    table = pq.read_table(out.url)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["price"] == "double" and schema["stock"] == "int64"
    assert schema["status"] == "string" and schema["data_status"] == "string"
    assert schema["meta"] == "string"
    assert "data" not in schema and "error" not in schema and "html" not in schema
    cols = table.to_pydict()
    assert cols["price"] == [1.5, None, 7.25, None]  # "abc" for a number -> null
    assert cols["stock"] == [0, None, 9, None]  # 2.5 is no integer
    assert cols["name"] == ["Product 0", "12", None, None]
    assert cols["status"] == ["ok", "ok", "ok", "error"]
    assert cols["data_status"] == ["in stock", None, None, None]
    assert cols["error_code"] == [None, None, None, "timeout"]
    df = pl.read_parquet(out.url)
    assert df.schema["price"] == pl.Float64


def test_boolean_and_list_fields(storage):
    fields = {"ok": "boolean", "tags": "list[string]", "link": "url"}
    rows = [
        _row(0, data={"ok": True, "tags": ["a", "b"], "link": "https://a.test/"}),
        _row(1, data={"ok": "false", "tags": "notalist", "link": None}),
        _row(2, data={}),
    ]
    parts = _parts(storage, rows, 3)
    [pq_out] = build_output(
        storage, parts, storage.url("p"), fmt="parquet", gzip=False, fields=fields
    )
    cols = pq.read_table(pq_out.url).to_pydict()
    assert cols["ok"] == [True, False, None]
    assert cols["tags"] == [["a", "b"], None, None]
    assert cols["link"] == ["https://a.test/", None, None]
    [csv_out] = build_output(storage, parts, storage.url("c"), fmt="csv", gzip=False, fields=fields)
    recs = list(csv.DictReader(io.StringIO(_read_text(csv_out.url))))
    assert json.loads(recs[0]["tags"]) == ["a", "b"] and recs[1]["tags"] == ""
    assert recs[0]["ok"] == "true"


@pytest.mark.parametrize("gz", [False, True])
def test_csv_round_trip(storage, gz):
    rows = _mixed_rows()
    parts = _parts(storage, rows, 4)
    [out] = build_output(storage, parts, storage.url("o"), fmt="csv", gzip=gz, fields=FIELDS)
    assert out.url.endswith(".csv.gz" if gz else ".csv")
    recs = list(csv.DictReader(io.StringIO(_read_text(out.url))))
    assert list(recs[0]) == [
        "url", "input_index", "status", "http_status", "final_url", "fetched_at", "elapsed_ms",
        "attempts", "credits", "content_hash", "meta", "error_code", "error_message",
        "name", "price", "price_currency", "stock", "data_status",
    ]  # fmt: skip
    assert len(recs) == len(rows)
    for rec, row in zip(recs, rows, strict=True):
        assert rec["url"] == row["url"] and int(rec["input_index"]) == row["input_index"]
        assert (json.loads(rec["meta"]) if rec["meta"] else None) == row["meta"]
        if row["status"] == "error":
            assert rec["error_code"] == "timeout" and rec["price"] == ""
        else:
            assert float(rec["price"]) == row["data"]["price"]
            assert rec["data_status"] == "in stock"
        assert rec["price_currency"] == ""  # these rows' data have none: an empty column


def test_number_fields_get_a_currency_column_in_every_row(storage):
    rows = _mixed_rows(6)
    rows[0]["data"]["price_currency"] = "EUR"
    parts = _parts(storage, rows, 3)
    fields = {"price": "number", "cost": "number", "cost_currency": "string"}
    [out] = build_output(storage, parts, storage.url("q"), fmt="parquet", gzip=False, fields=fields)
    table = pq.read_table(out.url)
    # after its field; a field the caller named ``cost_currency`` itself is not doubled
    assert table.column_names[-4:] == ["price", "price_currency", "cost", "cost_currency"]
    assert str(table.schema.field("price_currency").type) == "string"
    assert table["price_currency"].to_pylist() == ["EUR"] + [None] * 5


def test_split_by_size_keeps_every_row_once(storage):
    rows = _mixed_rows(400)
    parts = _parts(storage, rows, 37)
    for fmt, gz in (("ndjson", False), ("ndjson", True), ("csv", False), ("parquet", False)):
        files = build_output(
            storage,
            parts,
            storage.url("split", f"{fmt}{gz}"),
            fmt=fmt,
            gzip=gz,
            fields=FIELDS,
            max_part_bytes=8_000,
        )
        assert len(files) >= 2, fmt
        ext = files[0].url.rsplit("/", 1)[-1].split(".", 1)[1]
        assert [f.url.rsplit("/", 1)[-1] for f in files] == [
            f"result-{i:05d}.{ext}" for i in range(1, len(files) + 1)
        ]
        idx = []
        for f in files:
            assert f.rows > 0 and f.size_bytes == os.path.getsize(f.url)
            if fmt == "ndjson":
                got = [json.loads(x)["input_index"] for x in _read_text(f.url).splitlines()]
                if not gz:
                    assert f.size_bytes <= 8_000 + 2_000  # roughly the limit
            elif fmt == "csv":
                got = [
                    int(r["input_index"]) for r in csv.DictReader(io.StringIO(_read_text(f.url)))
                ]
                assert f.size_bytes <= 8_000 * 1.5
            else:
                got = pq.read_table(f.url).column("input_index").to_pylist()
            assert len(got) == f.rows
            idx.extend(got)
        assert idx == list(range(400)), fmt


def test_rebuild_replaces_earlier_split(storage):
    rows = _mixed_rows(200)
    parts = _parts(storage, rows, 50)
    dest = storage.url("o")
    build_output(storage, parts, dest, fmt="ndjson", gzip=False, fields={}, max_part_bytes=5_000)
    [one] = build_output(storage, parts, dest, fmt="ndjson", gzip=False, fields={})
    assert [os.path.basename(u) for u in storage.list(dest)] == ["result.ndjson"]
    assert one.rows == 200


def test_zero_parts_give_valid_empty_files(storage):
    for fmt, gz in (
        ("ndjson", False),
        ("ndjson", True),
        ("csv", False),
        ("csv", True),
        ("parquet", False),
    ):
        [out] = build_output(
            storage, [], storage.url("e", fmt + str(gz)), fmt=fmt, gzip=gz, fields=FIELDS
        )
        assert out.rows == 0
        if fmt == "ndjson":
            assert _read_text(out.url) == ""
        elif fmt == "csv":
            assert _read_text(out.url).splitlines()[0].startswith('"url","input_index"')
            assert len(_read_text(out.url).splitlines()) == 1
        else:
            t = pq.read_table(out.url)
            assert t.num_rows == 0 and t.schema.field("price").type == "double"
    assert read_results(storage, [], limit=10, offset=0) == ([], 0)
    assert count_rows(storage, []) == (0, 0)


def test_empty_part_is_fine(storage):
    parts = _parts(storage, [_row(0)], 1)
    empty = storage.url("jobs", "j1", "parts", "000009.parquet")
    write_part(storage, empty, [])
    files = build_output(
        storage, [empty, *parts], storage.url("o"), fmt="csv", gzip=False, fields=FIELDS
    )
    assert files[0].rows == 1
    assert count_rows(storage, [empty, *parts]) == (1, 0)


def test_read_results_pages_across_parts(storage):
    rows = _mixed_rows(2500)
    parts = _parts(storage, rows, 1100)  # parts span several 1024-row groups
    for offset, limit in ((0, 10), (1095, 10), (1020, 1000), (2490, 100), (2500, 5), (3000, 5)):
        page, total = read_results(storage, parts, limit=limit, offset=offset)
        assert total == 2500
        assert page == rows[offset : offset + limit], (offset, limit)


def test_count_rows(storage):
    rows = _mixed_rows(50)
    parts = _parts(storage, rows, 20)
    errored = sum(r["status"] == "error" for r in rows)
    assert count_rows(storage, parts) == (50, errored)


def test_stream_output_matches_build(storage):
    rows = _mixed_rows(60)
    parts = _parts(storage, rows, 25)
    nd = b"".join(stream_output(storage, parts, fmt="ndjson", fields={}))
    assert [orjson.loads(x) for x in nd.splitlines()] == rows
    text = b"".join(stream_output(storage, parts, fmt="csv", fields=FIELDS)).decode()
    recs = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["input_index"]) for r in recs] == list(range(60))
    assert "data_status" in recs[0]
    blob = b"".join(stream_output(storage, parts, fmt="parquet", fields=FIELDS))
    t = pq.read_table(io.BytesIO(blob))
    assert t.column("input_index").to_pylist() == list(range(60))
    empty = b"".join(stream_output(storage, [], fmt="csv", fields=FIELDS)).decode()
    assert empty.startswith('"url"') and len(empty.splitlines()) == 1


def test_column_names_prefix_only_on_collision():
    assert column_names({"name": "string", "status": "string", "meta": "string", "url": "url"}) == {
        "name": "name",
        "status": "data_status",
        "meta": "data_meta",
        "url": "data_url",
    }
    assert column_names({"status": "string", "data_status": "string"}) == {
        "status": "data_status",
        "data_status": "data_data_status",
    }


def test_remote_storage_builds_in_temp_and_uploads():
    storage = Storage("memory://shoal-out-test")
    rows = _mixed_rows(30)
    parts = _parts(storage, rows, 10)
    files = build_output(storage, parts, storage.url("o"), fmt="ndjson", gzip=True, fields={})
    assert files[0].url == storage.url("o", "result.ndjson.gz")
    assert files[0].url.startswith("memory://")
    with storage.open(files[0].url) as fh:
        got = [json.loads(x) for x in gzip.decompress(fh.read()).splitlines()]
    assert got == rows
    page, total = read_results(storage, parts, limit=5, offset=12)
    assert total == 30 and page == rows[12:17]
    [pq_out] = build_output(
        storage, parts, storage.url("o"), fmt="parquet", gzip=False, fields=FIELDS
    )
    with storage.open(pq_out.url) as fh:
        assert pq.read_table(fh).num_rows == 30
    storage.rm(storage.root, recursive=True)
