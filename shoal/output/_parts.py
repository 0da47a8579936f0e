"""Part files: one Parquet file per chunk, a fixed flat schema, and reading them back.

A part holds the chunk's rows in input order. Nested values (``meta``, ``data``, ``links``,
``metadata``) are stored as JSON text so the schema never depends on what a page yielded; the
output builder embeds that text as-is (NDJSON) or extracts typed columns from it (CSV/Parquet).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal.storage import Storage

PART_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("input_index", pa.int64()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("final_url", pa.string()),
        ("fetched_at", pa.string()),
        ("elapsed_ms", pa.int64()),
        ("attempts", pa.int32()),
        ("credits", pa.int32()),
        ("content_hash", pa.string()),
        ("meta_json", pa.string()),
        ("data_json", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("html", pa.string()),
        ("markdown", pa.string()),
        ("text", pa.string()),
        ("links_json", pa.string()),
        ("metadata_json", pa.string()),
    ]
)
PART_COLUMNS: tuple[str, ...] = tuple(PART_SCHEMA.names)
# result fields copied as they are, in contract order
RESULT_COLUMNS: tuple[str, ...] = PART_COLUMNS[:10]
_ERRORED_KEY = b"shoal.errored"
# small row groups let read_results skip to a deep offset and keep html-heavy parts readable
_ROW_GROUP_ROWS = 1024


def part_url(storage: Storage, job_id: str, index: int) -> str:
    """Where chunk ``index`` of a job writes its part file."""
    return storage.url("jobs", job_id, "parts", f"{index:06d}.parquet")


def part_urls(storage: Storage, job_id: str) -> list[str]:
    """The job's part files in chunk (= input) order."""
    return sorted(storage.list(storage.url("jobs", job_id, "parts")))


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _rfc3339(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        spec = "milliseconds" if value.microsecond else "seconds"
        return value.isoformat(timespec=spec) + "Z"
    return str(value)


def write_part(storage: Storage, url: str, rows: list[dict[str, Any]]) -> int:
    """Write one chunk's rows (PageResult-shaped dicts, in the order given) atomically.

    Returns the bytes written. Rewriting the same ``url`` replaces the part whole, so a retried
    chunk never duplicates rows.
    """
    cols: dict[str, list[Any]] = {name: [] for name in PART_COLUMNS}
    errored = 0
    for row in rows:
        if not isinstance(row, dict):  # a PageResult model
            row = row.model_dump()
        for name in ("url", "input_index", "status", "http_status", "final_url"):
            cols[name].append(row.get(name))
        cols["fetched_at"].append(_rfc3339(row.get("fetched_at")))
        cols["elapsed_ms"].append(row.get("elapsed_ms"))
        cols["attempts"].append(row.get("attempts") or 0)
        cols["credits"].append(row.get("credits") or 0)
        cols["content_hash"].append(row.get("content_hash"))
        cols["meta_json"].append(_json_text(row.get("meta")))
        cols["data_json"].append(_json_text(row.get("data")))
        err = row.get("error")
        if err is not None and not isinstance(err, dict):
            err = err.model_dump()
        cols["error_code"].append(err.get("code") if err else None)
        cols["error_message"].append(err.get("message") if err else None)
        if row.get("status") == "error":
            errored += 1
        for name in ("html", "markdown", "text"):
            cols[name].append(row.get(name))
        cols["links_json"].append(_json_text(row.get("links")))
        cols["metadata_json"].append(_json_text(row.get("metadata")))
    schema = PART_SCHEMA.with_metadata({_ERRORED_KEY: str(errored).encode()})
    table = pa.Table.from_pydict(cols, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=_ROW_GROUP_ROWS)
    data = buf.getvalue()
    storage.write_bytes_atomic(url, data)
    return len(data)


@contextmanager
def open_part(storage: Storage, url: str) -> Iterator[pq.ParquetFile]:
    """A part as a ``ParquetFile`` (random access, local or remote)."""
    local = storage.local_path(url)
    if local is not None:
        pf = pq.ParquetFile(local)
        try:
            yield pf
        finally:
            pf.close()
        return
    with storage.open(url, "rb") as fh:
        yield pq.ParquetFile(fh)


def iter_part_batches(
    storage: Storage, part_urls: list[str], columns: list[str], batch_rows: int = 8192
) -> Iterator[pa.RecordBatch]:
    """Every row of every part, part after part, in order, as batches of ``columns``."""
    for url in part_urls:
        with open_part(storage, url) as pf:
            present = set(pf.schema_arrow.names)
            want = [c for c in columns if c in present]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=want):
                yield _conform(batch, columns)


def _conform(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    """Add all-null columns a (older) part lacks, so every batch has the same schema."""
    if batch.schema.names == columns:
        return batch
    arrays = []
    for name in columns:
        idx = batch.schema.get_field_index(name)
        if idx >= 0:
            arrays.append(batch.column(idx))
        else:
            arrays.append(pa.nulls(batch.num_rows, PART_SCHEMA.field(name).type))
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def rows_from_batch(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """PageResult-shaped dicts (nested data/error, meta decoded; format keys when present)."""
    n = batch.num_rows
    cols = {name: _pylist(batch.column(i), n) for i, name in enumerate(batch.schema.names)}
    out = []
    for i in range(n):
        row: dict[str, Any] = {name: cols[name][i] for name in RESULT_COLUMNS}
        meta = cols["meta_json"][i]
        row["meta"] = orjson.loads(meta) if meta is not None else None
        data = cols["data_json"][i]
        row["data"] = orjson.loads(data) if data is not None else None
        code = cols["error_code"][i]
        row["error"] = (
            {"code": code, "message": cols["error_message"][i] or ""} if code is not None else None
        )
        for name in ("html", "markdown", "text"):
            if cols[name][i] is not None:
                row[name] = cols[name][i]
        for name, key in (("links_json", "links"), ("metadata_json", "metadata")):
            if cols[name][i] is not None:
                row[key] = orjson.loads(cols[name][i])
        out.append(row)
    return out


def _pylist(col: pa.Array, n: int) -> list[Any]:
    if col.null_count == n:
        return [None] * n
    return col.to_pylist()


def part_row_counts(storage: Storage, part_urls: list[str]) -> list[int]:
    """Rows per part, from the Parquet footers only."""
    counts = []
    for url in part_urls:
        with open_part(storage, url) as pf:
            counts.append(pf.metadata.num_rows)
    return counts


def read_results(
    storage: Storage, part_urls: list[str], *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of results in input order, and the total row count.

    Only footers are read for parts (and row groups) before ``offset``, so a page deep into a
    million rows costs about as much as the first.
    """
    rows: list[dict[str, Any]] = []
    total = 0
    for url in part_urls:
        with open_part(storage, url) as pf:
            n = pf.metadata.num_rows
            start, total = total, total + n
            if len(rows) >= limit or offset >= total:
                continue
            want = offset + len(rows) - start  # first wanted row inside this part
            columns = [c for c in PART_COLUMNS if c in set(pf.schema_arrow.names)]
            first = 0
            for rg in range(pf.metadata.num_row_groups):
                rg_rows = pf.metadata.row_group(rg).num_rows
                if first + rg_rows <= want:
                    first += rg_rows
                    continue
                table = pf.read_row_group(rg, columns=columns)
                table = table.slice(max(0, want - first), limit - len(rows))
                for batch in table.to_batches():
                    rows.extend(rows_from_batch(_conform(batch, list(PART_COLUMNS))))
                first += rg_rows
                if len(rows) >= limit:
                    break
    return rows, total


def count_rows(storage: Storage, part_urls: list[str]) -> tuple[int, int]:
    """``(rows, errored)`` over the parts: footers, plus the status column of older parts."""
    rows = errored = 0
    for url in part_urls:
        with open_part(storage, url) as pf:
            rows += pf.metadata.num_rows
            meta = pf.schema_arrow.metadata or {}
            if _ERRORED_KEY in meta:
                errored += int(meta[_ERRORED_KEY])
            else:
                status = pf.read(columns=["status"]).column("status")
                errored += int(pc.sum(pc.equal(status, "error")).as_py() or 0)
    return rows, errored
