"""Part files: a chunk's rows in Parquet files of a fixed flat schema, and reading them back.

A chunk persists its rows as it goes (``shoal.output._pieces``), so a kill loses only what was in
flight. Its files, under ``jobs/<id>/parts/``, are named by chunk, attempt ("run") and piece:

- ``<chunk:06d>-<run>-<seq:06d>.parquet``: a *piece*, the rows one attempt finished since its
  previous piece, in input order;
- ``<chunk:06d>-<run>.parquet``: a *compacted part*, every row the attempt kept (its pieces and
  what earlier attempts had persisted), in input order, written when the chunk ends;
- ``<chunk:06d>.parquet``: a whole chunk part as older versions wrote it (still read).

``<run>`` is unique per attempt (start time in ms, hex, then random), so no two attempts ever
write the same name and a rename never replaces another attempt's rows; a file is removed only
by an attempt that has written its rows into a newer file. A row may therefore be in several
files of its chunk (a stale attempt that had not noticed it was replaced, a compaction that died
before removing its inputs): readers group a chunk's files and keep each ``input_index`` once —
the first in the order compacted/whole parts, then pieces, each by run and sequence. A chunk of
one file (every finished chunk) is read as before, footers only where they suffice.

Nested values (``meta``, ``data``, ``links``, ``metadata``) are stored as JSON text so the schema
never depends on what a page yielded; the output builder embeds that text as-is (NDJSON) or
extracts typed columns from it (CSV/Parquet).

``not_modified`` is the result field of a row a ``304`` carried forward (``shoal.conditional``);
``screenshot_url`` holds the download name of a rendered page's PNG (older parts: a link signed
then), made a link signed for the reader's expiry whenever rows are served
(``sign_screenshots``, ``read_results``' ``screenshot_link``; ``shoal.screenshots``).
``etag`` and ``last_modified`` are internal: the validators of an ok row's response, kept so the
next run of a schedule can ask with them; the output builder leaves them out (it names the
columns it writes) and results pages do not show them.
"""

from __future__ import annotations

import io
import logging
import posixpath
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal.storage import Storage

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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
        ("not_modified", pa.bool_()),
        ("screenshot_url", pa.string()),
        ("etag", pa.string()),  # internal (see the module docstring)
        ("last_modified", pa.string()),  # internal
    ]
)
PART_COLUMNS: tuple[str, ...] = tuple(PART_SCHEMA.names)
# result fields copied as they are, in contract order
RESULT_COLUMNS: tuple[str, ...] = PART_COLUMNS[:10]
_ERRORED_KEY = b"shoal.errored"
_CREDITS_KEY = b"shoal.credits"
# small row groups let read_results skip to a deep offset and keep html-heavy parts readable
_ROW_GROUP_ROWS = 1024
# a piece may vanish between a listing and its read (its chunk was compacted): list again
_RELIST_TRIES = 5


class PartName(NamedTuple):
    """What a part file's name says. ``kind`` 0: a whole or compacted part, 1: a piece."""

    chunk: int
    kind: int
    run: str
    seq: int


def parse_part_name(url: str) -> PartName | None:
    """The chunk, kind, run and sequence of a part file; None for anything else (temp files)."""
    name = posixpath.basename(url)
    if not name.endswith(".parquet"):
        return None
    fields = name[: -len(".parquet")].split("-")
    if not fields[0].isdigit() or len(fields) > 3:
        return None
    if len(fields) == 1:
        return PartName(int(fields[0]), 0, "", 0)
    if not fields[1].isalnum():
        return None
    if len(fields) == 2:
        return PartName(int(fields[0]), 0, fields[1], 0)
    if not fields[2].isdigit():
        return None
    return PartName(int(fields[0]), 1, fields[1], int(fields[2]))


def new_run() -> str:
    """A token unique to one attempt at a chunk, ordered by start time (ms, hex) first."""
    return f"{time.time_ns() // 1_000_000:011x}{secrets.token_hex(3)}"


def part_url(storage: Storage, job_id: str, index: int) -> str:
    """A whole part of chunk ``index`` (the name older versions wrote; still read)."""
    return storage.url("jobs", job_id, "parts", f"{index:06d}.parquet")


def compacted_url(storage: Storage, job_id: str, index: int, run: str) -> str:
    """Where attempt ``run`` of chunk ``index`` writes its compacted part."""
    return storage.url("jobs", job_id, "parts", f"{index:06d}-{run}.parquet")


def piece_url(storage: Storage, job_id: str, index: int, run: str, seq: int) -> str:
    """Where attempt ``run`` of chunk ``index`` writes its piece number ``seq``."""
    return storage.url("jobs", job_id, "parts", f"{index:06d}-{run}-{seq:06d}.parquet")


def _sorted_parts(urls: list[str]) -> list[str]:
    named = [(n, u) for u in urls if (n := parse_part_name(u)) is not None]
    return [u for _, u in sorted(named)]


def part_urls(storage: Storage, job_id: str) -> list[str]:
    """The job's part files, pieces included, in chunk (= input) order; in a chunk, in the
    order readers prefer a row (see the module docstring). Temp files are left out."""
    return _sorted_parts(storage.list(storage.url("jobs", job_id, "parts")))


def chunk_part_urls(storage: Storage, job_id: str, index: int) -> list[str]:
    """The files of chunk ``index`` of a job, in preference order."""
    return [u for u in part_urls(storage, job_id) if _chunk_of(u) == index]


def _chunk_of(url: str) -> int | None:
    name = parse_part_name(url)
    return None if name is None else name.chunk


def _groups(urls: list[str]) -> list[list[str]]:
    """``urls`` grouped by chunk, groups in order of first appearance, each in preference order.
    A URL whose name is not a part name is a group of its own."""
    groups: dict[Any, list[str]] = {}
    for n, url in enumerate(urls):
        chunk = _chunk_of(url)
        groups.setdefault(("?", n) if chunk is None else chunk, []).append(url)
    return [g if len(g) == 1 else _sorted_parts(g) for g in groups.values()]


def _relist(storage: Storage, group: list[str]) -> list[str]:
    """The chunk's files now (after one of ``group`` vanished: it was compacted meanwhile)."""
    chunk = _chunk_of(group[0])
    if chunk is None:
        raise FileNotFoundError(group[0])
    folder = group[0].rsplit("/", 1)[0]
    return [u for u in _sorted_parts(storage.list(folder)) if _chunk_of(u) == chunk]


def _with_relist(storage: Storage, group: list[str], read: Callable[[list[str]], _T]) -> _T:
    """``read(group)``, listing the chunk's files again when one has vanished under it."""
    for _ in range(_RELIST_TRIES - 1):
        try:
            return read(group)
        except FileNotFoundError:
            group = _relist(storage, group)
    return read(group)


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


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """PageResult-shaped dicts (or models), in the order given, as a table of ``PART_SCHEMA``."""
    cols: dict[str, list[Any]] = {name: [] for name in PART_COLUMNS}
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
        for name in ("html", "markdown", "text"):
            cols[name].append(row.get(name))
        cols["links_json"].append(_json_text(row.get("links")))
        cols["metadata_json"].append(_json_text(row.get("metadata")))
        cols["not_modified"].append(row.get("not_modified"))
        cols["screenshot_url"].append(row.get("screenshot_url"))
        cols["etag"].append(row.get("etag"))
        cols["last_modified"].append(row.get("last_modified"))
    return pa.Table.from_pydict(cols, schema=PART_SCHEMA)


class Kept(NamedTuple):
    """Rows, errored rows and their credits: what a set of part files holds, or a chunk kept."""

    rows: int
    errored: int
    credits: int


def table_counts(table: pa.Table) -> Kept:
    """The ``Kept`` of a table of part rows (each ``input_index`` once)."""
    if table.num_rows == 0:
        return Kept(0, 0, 0)
    errored = pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0
    credits = pc.sum(table.column("credits")).as_py() or 0
    return Kept(table.num_rows, int(errored), int(credits))


def write_table(storage: Storage, url: str, table: pa.Table) -> int:
    """Write a table of part rows atomically (write a temp name, rename); the bytes written.
    Its errored rows and credits go into the footer, so counting needs no column read."""
    counts = table_counts(table)
    table = table.replace_schema_metadata(
        {_ERRORED_KEY: str(counts.errored).encode(), _CREDITS_KEY: str(counts.credits).encode()}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=_ROW_GROUP_ROWS)
    data = buf.getvalue()
    storage.write_bytes_atomic(url, data)
    return len(data)


def write_part(storage: Storage, url: str, rows: list[dict[str, Any]]) -> int:
    """Write rows (PageResult-shaped dicts, in the order given) as one part file, atomically.

    Returns the bytes written. Rewriting the same ``url`` replaces the part whole."""
    return write_table(storage, url, rows_table(rows))


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


def _read_table(storage: Storage, url: str, columns: list[str] | None = None) -> pa.Table:
    """One part file as a table of ``columns`` (default all), conformed to ``PART_SCHEMA``."""
    want = list(PART_COLUMNS) if columns is None else columns
    with open_part(storage, url) as pf:
        present = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in want if c in present])
    table = table.replace_schema_metadata(None)
    if table.schema.names == want:
        return table
    return pa.Table.from_batches(
        [_conform(b, want) for b in table.to_batches()],
        schema=pa.schema([PART_SCHEMA.field(c) for c in want]),
    )


def dedupe(table: pa.Table) -> pa.Table:
    """Each ``input_index`` once — the first occurrence wins — in input order."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=[("input_index", "ascending")])  # stable
    idx = pc.take(table.column("input_index"), order).combine_chunks()
    first = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(idx.slice(1), idx.slice(0, len(idx) - 1))]
    )
    return table.take(pc.filter(order, first))


def read_chunk_files(
    storage: Storage, urls: list[str], columns: list[str] | None = None
) -> pa.Table:
    """The rows of one chunk's files (given in preference order), each ``input_index`` once,
    in input order. ``FileNotFoundError`` when one has vanished (the caller lists again)."""
    want = list(PART_COLUMNS) if columns is None else list(columns)
    cols = want if "input_index" in want else [*want, "input_index"]
    tables = [_read_table(storage, u, cols) for u in urls]
    if not tables:
        return pa.schema([PART_SCHEMA.field(c) for c in want]).empty_table()
    table = dedupe(pa.concat_tables(tables)) if len(tables) > 1 else tables[0]
    return table.select(want)


def read_kept(storage: Storage, job_id: str, index: int) -> tuple[pa.Table, list[str]]:
    """What earlier attempts at chunk ``index`` persisted (each row once, in input order), and
    the files it came from."""
    urls = chunk_part_urls(storage, job_id, index)
    if not urls:
        return PART_SCHEMA.empty_table(), []
    for _ in range(_RELIST_TRIES - 1):
        try:
            return read_chunk_files(storage, urls), urls
        except FileNotFoundError:
            urls = chunk_part_urls(storage, job_id, index)
    return read_chunk_files(storage, urls), urls


def iter_part_batches(
    storage: Storage, part_urls: list[str], columns: list[str], batch_rows: int = 8192
) -> Iterator[pa.RecordBatch]:
    """Every row of the parts, chunk after chunk, in input order, each ``input_index`` once,
    as batches of ``columns``. A chunk of one file is streamed; one of several (pieces) is
    read whole (at most a chunk's rows) to merge them."""
    for group in _groups(part_urls):
        yield from _group_batches(storage, group, columns, batch_rows)


def _group_batches(
    storage: Storage, group: list[str], columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    for _ in range(_RELIST_TRIES):
        started = False
        try:
            if len(group) == 1:
                with open_part(storage, group[0]) as pf:
                    present = set(pf.schema_arrow.names)
                    want = [c for c in columns if c in present]
                    for batch in pf.iter_batches(batch_size=batch_rows, columns=want):
                        started = True
                        yield _conform(batch, columns)
                return
            table = read_chunk_files(storage, group, columns)
        except FileNotFoundError:
            if started or _chunk_of(group[0]) is None:
                raise
            group = _relist(storage, group)
            continue
        for batch in table.to_batches(max_chunksize=batch_rows):
            yield _conform(batch, columns)
        return
    raise FileNotFoundError(group[0])


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
    not_modified = cols.get("not_modified")
    shots = cols.get("screenshot_url")
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
        if not_modified is not None and not_modified[i]:
            row["not_modified"] = True
        if shots is not None and shots[i] is not None:
            row["screenshot_url"] = shots[i]
        out.append(row)
    return out


def _pylist(col: pa.Array, n: int) -> list[Any]:
    if col.null_count == n:
        return [None] * n
    return col.to_pylist()


class RowSpan(NamedTuple):
    """Rows ``input_index`` ``first..last`` of a job: row group ``row_group`` of one part file,
    or (``row_group`` -1) a chunk's files read whole (a chunk still in pieces)."""

    first: int
    last: int
    urls: tuple[str, ...]
    row_group: int


def row_spans(storage: Storage, part_urls: list[str]) -> list[RowSpan]:
    """Where each row of the parts is, by ``first``: footers only for a chunk of one file
    (every finished chunk), a read of ``input_index`` for a chunk in pieces. For reading a few
    rows by ``input_index`` without reading a chunk whole (``shoal.conditional``)."""
    spans = []
    for group in _groups(part_urls):
        if len(group) == 1:
            spans.extend(_with_relist(storage, group, partial(_file_spans, storage)))
            continue
        table = _with_relist(
            storage, group, lambda g: read_chunk_files(storage, g, ["input_index"])
        )
        if table.num_rows:
            idx = table.column("input_index")
            spans.append(RowSpan(pc.min(idx).as_py(), pc.max(idx).as_py(), tuple(group), -1))
    return sorted(spans)


def _file_spans(storage: Storage, group: list[str]) -> list[RowSpan]:
    out = []
    with open_part(storage, group[0]) as pf:
        meta = pf.metadata
        col = pf.schema_arrow.get_field_index("input_index")
        for rg in range(meta.num_row_groups):
            if meta.row_group(rg).num_rows == 0:
                continue
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                idx = pf.read_row_group(rg, columns=["input_index"]).column(0)
                first, last = pc.min(idx).as_py(), pc.max(idx).as_py()
            else:
                first, last = stats.min, stats.max
            out.append(RowSpan(int(first), int(last), (group[0],), rg))
    return out


def read_span(storage: Storage, span: RowSpan, columns: list[str]) -> pa.Table:
    """The rows of ``span`` as a table of ``columns`` (each ``input_index`` once).
    ``FileNotFoundError`` when a file has gone (retention, or a compaction since)."""
    if span.row_group < 0:
        return read_chunk_files(storage, list(span.urls), columns)
    with open_part(storage, span.urls[0]) as pf:
        present = set(pf.schema_arrow.names)
        table = pf.read_row_group(span.row_group, columns=[c for c in columns if c in present])
    table = table.replace_schema_metadata(None)
    if table.schema.names == columns:
        return table
    return pa.Table.from_batches(
        [_conform(b, columns) for b in table.to_batches()],
        schema=pa.schema([PART_SCHEMA.field(c) for c in columns]),
    )


def part_row_counts(storage: Storage, part_urls: list[str]) -> list[int]:
    """Rows per part file, from the Parquet footers only (a row in two pieces counts twice)."""
    counts = []
    for url in part_urls:
        with open_part(storage, url) as pf:
            counts.append(pf.metadata.num_rows)
    return counts


def _chunk_rows(storage: Storage, group: list[str]) -> int:
    """Rows a chunk's files hold, each ``input_index`` once (a footer when one file)."""

    def read(g: list[str]) -> int:
        if len(g) == 1:
            with open_part(storage, g[0]) as pf:
                return int(pf.metadata.num_rows)
        return read_chunk_files(storage, g, ["input_index"]).num_rows

    return _with_relist(storage, group, read)


def read_results(
    storage: Storage,
    part_urls: list[str],
    *,
    limit: int,
    offset: int,
    screenshot_link: Callable[[int], str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of results in input order, and the total row count (each row once).

    ``screenshot_link``: ``input_index`` -> the signed link of its screenshot, for the rows
    that have one (``shoal.screenshots.links_of``); without it they show none.

    Only footers are read for chunks of one file (and row groups) before ``offset``, so a page
    deep into a million rows of a finished job costs about as much as the first; a chunk still
    in pieces costs a read of its ``input_index`` columns."""
    rows: list[dict[str, Any]] = []
    total = 0
    for group in _groups(part_urls):
        n = _chunk_rows(storage, group)
        start, total = total, total + n
        if len(rows) >= limit or offset >= total:
            continue
        page = partial(_page, storage, want=offset + len(rows) - start, n=limit - len(rows))
        rows.extend(_with_relist(storage, group, page))
    for row in rows:
        if "screenshot_url" in row:
            if screenshot_link is None:
                del row["screenshot_url"]
            else:
                row["screenshot_url"] = screenshot_link(row["input_index"])
    return rows, total


def sign_screenshots(table: pa.Table, screenshot_link: Callable[[int], str] | None) -> pa.Table:
    """``table`` (part rows with ``input_index``) with each ``screenshot_url`` the reader's
    signed link (``read_results``); all null without ``screenshot_link``. A name is never
    shown as a link: only rows that have a screenshot get one."""
    at = table.schema.get_field_index("screenshot_url")
    if at < 0:
        return table
    shots = table.column(at)
    if shots.null_count == len(shots):
        return table
    if screenshot_link is None:
        signed = pa.nulls(len(shots), pa.string())
    else:
        indices = table.column("input_index").to_pylist()
        signed = pa.array(
            [
                None if v is None else screenshot_link(i)
                for i, v in zip(indices, shots.to_pylist(), strict=True)
            ],
            pa.string(),
        )
    return table.set_column(at, "screenshot_url", signed)


def _page(storage: Storage, group: list[str], *, want: int, n: int) -> list[dict[str, Any]]:
    """Rows ``[want, want + n)`` of one chunk's files."""
    out: list[dict[str, Any]] = []
    if len(group) > 1:
        table = read_chunk_files(storage, group).slice(want, n)
        for batch in table.to_batches():
            out.extend(rows_from_batch(_conform(batch, list(PART_COLUMNS))))
        return out
    with open_part(storage, group[0]) as pf:
        columns = [c for c in PART_COLUMNS if c in set(pf.schema_arrow.names)]
        first = 0
        for rg in range(pf.metadata.num_row_groups):
            rg_rows = pf.metadata.row_group(rg).num_rows
            if first + rg_rows <= want:
                first += rg_rows
                continue
            table = pf.read_row_group(rg, columns=columns)
            table = table.slice(max(0, want - first), n - len(out))
            for batch in table.to_batches():
                out.extend(rows_from_batch(_conform(batch, list(PART_COLUMNS))))
            first += rg_rows
            if len(out) >= n:
                break
    return out


def count_kept(storage: Storage, part_urls: list[str]) -> Kept:
    """Rows, errored rows and credits over the parts, each ``input_index`` once: footers for a
    chunk of one file (columns for older parts without the counts), columns for pieces."""
    rows = errored = credits = 0
    for group in _groups(part_urls):
        c = _with_relist(storage, group, lambda g: _group_counts(storage, g))
        rows, errored, credits = rows + c.rows, errored + c.errored, credits + c.credits
    return Kept(rows, errored, credits)


def _group_counts(storage: Storage, group: list[str]) -> Kept:
    if len(group) > 1:
        return table_counts(read_chunk_files(storage, group, ["input_index", "status", "credits"]))
    with open_part(storage, group[0]) as pf:
        meta = pf.schema_arrow.metadata or {}
        n = int(pf.metadata.num_rows)
        if _ERRORED_KEY in meta and _CREDITS_KEY in meta:
            return Kept(n, int(meta[_ERRORED_KEY]), int(meta[_CREDITS_KEY]))
        present = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in ("status", "credits") if c in present])
    errored = int(pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0)
    credits = int(pc.sum(table.column("credits")).as_py() or 0) if "credits" in present else 0
    return Kept(n, errored, credits)


def count_rows(storage: Storage, part_urls: list[str]) -> tuple[int, int]:
    """``(rows, errored)`` over the parts, each ``input_index`` once (see ``count_kept``)."""
    kept = count_kept(storage, part_urls)
    return kept.rows, kept.errored
