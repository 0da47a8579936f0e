"""Parts -> one downloadable output (NDJSON, CSV or Parquet), split by size, streamed.

Everything works batch by batch (a few thousand rows), so memory stays bounded whatever the
job's size. NDJSON lines are made by orjson, embedding the stored JSON text with
``orjson.Fragment`` instead of parsing it; CSV and Parquet get their typed extract columns from
DuckDB's JSON functions, run on each batch; pyarrow writes the files. Parts are read one after
the other, so the output keeps input order without a sort.

Result fields only some jobs carry (``Extras``): ``change`` (a job with ``compare``: each
row's label from the change report, looked up by ``input_index`` in ``shoal.changes``' sorted
labels, a slice per batch) and, in CSV/Parquet, ``not_modified`` (a ``conditional`` job; NDJSON
has the key on the rows a 304 carried forward) and ``screenshot_url`` (a job whose defaults,
inline URLs or input file's rows ask for screenshots: ``JobSpec.screenshots``, fixed before the
first part is written, so every file and page of a job has the same columns; NDJSON has the key
on the rows that have one). They are last, so the columns every output has keep their places.
A ``screenshot_url`` is signed here, per batch, with
``Extras.screenshot_link`` (the reader's expiry: ``shoal.screenshots``); the parts hold names.
"""

from __future__ import annotations

import gzip as _gzip
import io
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shoal.contract import PageResult, currency_field
from shoal.output._parts import (
    PART_COLUMNS,
    RESULT_COLUMNS,
    iter_part_batches,
    sign_screenshots,
)
from shoal.storage import Storage

Fmt = Literal["ndjson", "csv", "parquet"]

# Measured on 1M rows (bench/output_build.py): level 1 builds ndjson.gz in 3.8 s / 31 MB,
# level 6 in 4.9 s / 26 MB.
GZIP_LEVEL = 1
_FLAT_INPUT = [*RESULT_COLUMNS, "meta_json", "error_code", "error_message", "data_json"]
_RESERVED = frozenset(PageResult.model_fields) | {"error_code", "error_message"}
_RESULT_TYPES = [
    pa.string(), pa.int64(), pa.string(), pa.int32(), pa.string(), pa.string(),
    pa.int64(), pa.int32(), pa.int32(), pa.string(),
]  # fmt: skip
_BASE_FLAT_FIELDS = [
    *(pa.field(n, t) for n, t in zip(RESULT_COLUMNS, _RESULT_TYPES, strict=True)),
    pa.field("meta", pa.string()),
    pa.field("error_code", pa.string()),
    pa.field("error_message", pa.string()),
]
_PARQUET_GROUP_ROWS = 65_536
_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class Extras:
    """Result fields of some jobs' outputs (module docstring).

    ``change``: input indices -> their ``change`` labels (null: none), or None for no
    ``change`` field; ``not_modified``: CSV/Parquet have the ``not_modified`` column;
    ``screenshot_url``: CSV/Parquet have the ``screenshot_url`` column (a job that asks for
    screenshots, in its defaults, inline URLs or file rows: ``JobSpec.screenshots``);
    ``screenshot_link``: ``input_index`` -> the signed link of its screenshot
    (``shoal.screenshots.links``), without which no row shows one."""

    change: Callable[[pa.Array], pa.Array] | None = None
    not_modified: bool = False
    screenshot_url: bool = False
    screenshot_link: Callable[[int], str] | None = None


_NO_EXTRAS = Extras()


@dataclass
class OutputFile:
    url: str
    rows: int
    size_bytes: int


def column_names(fields: Mapping[str, str]) -> dict[str, str]:
    """Extract field -> its CSV/Parquet column: its own name, ``data_``-prefixed on collision."""
    taken = set(_RESERVED)
    out = {}
    for name in fields:
        col = name
        while col in taken:
            col = f"data_{col}"
        taken.add(col)
        out[name] = col
    return out


def with_currency(fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` with each ``number`` field's ``<field>_currency`` (a string) right after it,
    as extraction adds it to ``data``: the column exists in every row, null when unknown."""
    out: dict[str, str] = {}
    for name, typ in fields.items():
        out.setdefault(name, typ)
        companion = currency_field(name)
        if typ == "number" and companion not in fields:
            out.setdefault(companion, "string")
    return out


def flat_schema(fields: Mapping[str, str], fmt: Fmt, extras: Extras = _NO_EXTRAS) -> pa.Schema:
    """The columns of a CSV or Parquet output for these extract fields (and ``extras``)."""
    fields = with_currency(fields)
    types = {
        "string": pa.string(),
        "url": pa.string(),
        "number": pa.float64(),
        "integer": pa.int64(),
        "boolean": pa.bool_(),
        "list[string]": pa.list_(pa.string()) if fmt == "parquet" else pa.string(),
    }
    extra = [
        pa.field(col, types.get(fields[f], pa.string())) for f, col in column_names(fields).items()
    ]
    if extras.not_modified:
        extra.append(pa.field("not_modified", pa.bool_()))
    if extras.screenshot_url:
        extra.append(pa.field("screenshot_url", pa.string()))
    if extras.change is not None:
        extra.append(pa.field("change", pa.string()))
    return pa.schema([*_BASE_FLAT_FIELDS, *extra])


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _typed_expr(v: str, typ: str, fmt: Fmt) -> str:
    """SQL turning JSON value ``v`` into the field's type; anything that does not fit is NULL."""
    t = f"json_type({v})"
    s = f"json_extract_string({v}, '$')"
    if typ == "number":
        return (
            f"CASE WHEN {t} IN ('BIGINT','UBIGINT','DOUBLE') THEN TRY_CAST({v} AS DOUBLE) "
            f"WHEN {t} = 'VARCHAR' THEN TRY_CAST({s} AS DOUBLE) END"
        )
    if typ == "integer":
        d = f"TRY_CAST({v} AS DOUBLE)"
        return (
            f"CASE WHEN {t} IN ('BIGINT','UBIGINT') THEN TRY_CAST({v} AS BIGINT) "
            f"WHEN {t} = 'DOUBLE' AND {d} = floor({d}) THEN TRY_CAST({d} AS BIGINT) "
            f"WHEN {t} = 'VARCHAR' THEN TRY_CAST({s} AS BIGINT) END"
        )
    if typ == "boolean":
        return (
            f"CASE WHEN {t} = 'BOOLEAN' THEN TRY_CAST({v} AS BOOLEAN) "
            f"WHEN {t} = 'VARCHAR' THEN TRY_CAST({s} AS BOOLEAN) END"
        )
    if typ == "list[string]":
        lst = f"CASE WHEN {t} = 'ARRAY' THEN TRY_CAST({v} AS VARCHAR[]) END"
        return lst if fmt == "parquet" else f"CAST(to_json({lst}) AS VARCHAR)"
    # string, url: scalars as text; objects and arrays do not fit
    return (
        f"CASE WHEN {t} = 'VARCHAR' THEN {s} "
        f"WHEN {t} IN ('BIGINT','UBIGINT','DOUBLE','BOOLEAN') THEN CAST({v} AS VARCHAR) END"
    )


def _flat_sql(fields: Mapping[str, str], fmt: Fmt, extras: Extras = _NO_EXTRAS) -> str:
    cols = [*RESULT_COLUMNS, "meta_json AS meta", "error_code", "error_message"]
    fields = with_currency(fields)
    names = column_names(fields)
    tail = []
    if extras.not_modified:
        tail.append("coalesce(not_modified, false) AS not_modified")
    if extras.screenshot_url:
        tail.append("screenshot_url")
    if extras.change is not None:
        tail.append("change")
    if not fields:
        return f"SELECT {', '.join([*cols, *tail])} FROM b"
    # JSON pointers, so field names with dots or quotes need no path escaping
    pointers = ", ".join(_sql_str("/" + f.replace("~", "~0").replace("/", "~1")) for f in fields)
    for i, (f, typ) in enumerate(fields.items(), start=1):
        cols.append(f"{_typed_expr(f'_v[{i}]', typ, fmt)} AS {_sql_ident(names[f])}")
    cols.extend(tail)
    return (
        f"SELECT {', '.join(cols)} FROM "
        f"(SELECT *, json_extract(data_json, [{pointers}]) AS _v FROM b)"
    )


def _with_extras(batch: pa.RecordBatch, extras: Extras) -> pa.Table:
    """The batch as a table, its screenshots' links signed, with its rows' ``change`` labels
    when the output has them."""
    table = sign_screenshots(pa.Table.from_batches([batch]), extras.screenshot_link)
    if extras.change is None:
        return table
    return table.append_column("change", extras.change(batch.column("input_index")))


def _flat_batches(
    storage: Storage,
    part_urls: list[str],
    fields: Mapping[str, str],
    fmt: Fmt,
    extras: Extras = _NO_EXTRAS,
) -> Iterator[pa.Table]:
    schema = flat_schema(fields, fmt, extras)
    sql = _flat_sql(fields, fmt, extras)
    columns = [*_FLAT_INPUT, "not_modified"] if extras.not_modified else list(_FLAT_INPUT)
    if extras.screenshot_url:
        columns.append("screenshot_url")
    con = _connect()
    try:
        for batch in iter_part_batches(storage, part_urls, columns):
            if batch.num_rows == 0:
                continue
            con.register("b", _with_extras(batch, extras))
            yield con.sql(sql).to_arrow_table().cast(schema)
            con.unregister("b")
    finally:
        con.close()


# ---------------------------------------------------------------------------- encoders


# format key, part column, stored as JSON text
_OPTIONAL = (
    ("html", "html", False),
    ("markdown", "markdown", False),
    ("text", "text", False),
    ("links", "links_json", True),
    ("metadata", "metadata_json", True),
    # a row a 304 carried forward (shoal.conditional): true there, absent elsewhere
    ("not_modified", "not_modified", False),
    # a rendered page's PNG (shoal.screenshots)
    ("screenshot_url", "screenshot_url", False),
)


def _ndjson_sql(present: tuple[str, ...], change: bool = False) -> str:
    """One finished NDJSON line per row, made by string concatenation in DuckDB.

    JSON text stored in the parts is embedded as it is (no parse); format keys appear only
    when set. Measured 1.7x faster than building dicts for orjson with ``orjson.Fragment``.
    """

    def text(col: str) -> str:
        return f"coalesce(to_json({col}), 'null')"

    def num(col: str) -> str:
        return f"coalesce(CAST({col} AS VARCHAR), 'null')"

    parts = [
        """'{"url":' || """ + text("url"),
        """',"input_index":' || """ + num("input_index"),
        """',"status":' || """ + text("status"),
        """',"http_status":' || """ + num("http_status"),
        """',"final_url":' || """ + text("final_url"),
        """',"fetched_at":' || """ + text("fetched_at"),
        """',"elapsed_ms":' || """ + num("elapsed_ms"),
        """',"attempts":' || """ + num("attempts"),
        """',"credits":' || """ + num("credits"),
        """',"content_hash":' || """ + text("content_hash"),
        """',"meta":' || coalesce(meta_json, 'null')""",
        """',"data":' || coalesce(data_json, 'null')""",
        """',"error":' || CASE WHEN error_code IS NULL THEN 'null' ELSE """
        """'{"code":' || to_json(error_code) || ',"message":' || """
        """to_json(coalesce(error_message, '')) || '}' END""",
    ]
    for key, col, is_json in _OPTIONAL:
        if col in present:
            value = col if is_json else f"to_json({col})"
            parts.append(f"""CASE WHEN {col} IS NULL THEN '' ELSE ',"{key}":' || {value} END""")
    if change:
        parts.append("""',"change":' || """ + text("change"))
    parts.append("'}' || chr(10)")
    return "SELECT " + " || ".join(parts) + " AS line FROM b"


def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"threads": 2, "memory_limit": "1GB"})


def _ndjson_batches(
    storage: Storage, part_urls: list[str], extras: Extras = _NO_EXTRAS
) -> Iterator[pa.Table]:
    """Tables of one ``line`` column (each value one newline-terminated NDJSON line)."""
    sqls: dict[tuple[str, ...], str] = {}
    change = extras.change is not None
    con = _connect()
    try:
        for batch in iter_part_batches(storage, part_urls, list(PART_COLUMNS)):
            n = batch.num_rows
            if n == 0:
                continue
            present = tuple(c for _, c, _ in _OPTIONAL if batch.column(c).null_count < n)
            sql = sqls.get(present) or sqls.setdefault(present, _ndjson_sql(present, change))
            con.register("b", _with_extras(batch, extras))
            yield con.sql(sql).to_arrow_table()
            con.unregister("b")
    finally:
        con.close()


def _lines_bytes(table: pa.Table) -> memoryview:
    """The concatenated values of a one-column string table, without copying them."""
    arr = table.column(0).combine_chunks()
    if len(arr) == 0:
        return memoryview(b"")
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        # e.g. string_view: no contiguous buffer
        return memoryview(b"".join(v.encode() for v in arr.to_pylist()))
    _, offsets, values = arr.buffers()
    off = memoryview(offsets).cast("q" if pa.types.is_large_string(arr.type) else "i")
    return memoryview(values)[off[arr.offset] : off[arr.offset + len(arr)]]


def _encode_csv(table: pa.Table, header: bool) -> bytes:
    buf = io.BytesIO()
    pcsv.write_csv(table, buf, pcsv.WriteOptions(include_header=header))
    return buf.getvalue()


# ---------------------------------------------------------------------------- sinks


class _Sink:
    """One output file being written; ``size()`` is what is on disk so far (roughly)."""

    rows = 0

    def size(self) -> int:
        raise NotImplementedError

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _BytesSink(_Sink):
    def __init__(
        self,
        path: str,
        encode: Callable[[Any, bool], bytes | memoryview],
        gzip: bool,
        empty_prefix: bytes = b"",
    ) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out: Any = (
            _gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            if gzip
            else self._raw
        )
        self._encode = encode
        self._first = True
        self.rows = 0
        if empty_prefix:  # e.g. the CSV header, so an empty output is a valid file
            self._out.write(empty_prefix)
            self._first = False

    def size(self) -> int:
        if self._out is not self._raw:
            # zlib holds compressed output back; a sync flush makes the file size true
            self._out.flush()
        return self._raw.tell()

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        self._out.write(self._encode(table, self._first))
        self._first = False
        self.rows += table.num_rows

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()


class _ParquetSink(_Sink):
    def __init__(self, path: str, schema: pa.Schema, group_rows: int) -> None:
        self._file = pa.OSFile(path, "wb")
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._group_rows = group_rows
        self.rows = 0

    def size(self) -> int:
        return self._file.tell()

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self._group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._file.close()


def _ext(fmt: Fmt, gzip: bool) -> str:
    return {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}[fmt] + (
        ".gz" if gzip and fmt != "parquet" else ""
    )


def _source(
    storage: Storage, part_urls: list[str], fmt: Fmt, fields: Mapping[str, str], extras: Extras
) -> Iterable:
    if fmt == "ndjson":
        return _ndjson_batches(storage, part_urls, extras)
    return _flat_batches(storage, part_urls, fields, fmt, extras)


def _sink_factory(
    fmt: Fmt,
    gzip: bool,
    fields: Mapping[str, str],
    max_part_bytes: int | None,
    extras: Extras = _NO_EXTRAS,
) -> Callable[[str], _Sink]:
    if fmt == "ndjson":
        return lambda path: _BytesSink(path, lambda t, _first: _lines_bytes(t), gzip)
    schema = flat_schema(fields, fmt, extras)
    if fmt == "csv":
        header = _encode_csv(schema.empty_table(), True)
        return lambda path: _BytesSink(
            path, lambda t, _first: _encode_csv(t, False), gzip, empty_prefix=header
        )
    group = _PARQUET_GROUP_ROWS
    if max_part_bytes is not None and max_part_bytes < 256 * 1024**2:
        group = 1  # flush every write so size() sees the bytes and splitting stays close
    return lambda path: _ParquetSink(path, schema, group)


def _write_files(
    batches: Iterable[pa.Table | pa.RecordBatch],
    folder: str,
    ext: str,
    new_sink: Callable[[str], _Sink],
    max_part_bytes: int | None,
) -> list[tuple[str, int]]:
    """Write batches into one file, or several of at most ~max_part_bytes; rows never split."""
    done: list[tuple[str, int]] = []
    done_rows = done_bytes = 0

    def open_next() -> tuple[str, _Sink]:
        path = os.path.join(folder, f"part-{len(done) + 1:05d}.{ext}")
        return path, new_sink(path)

    path, sink = open_next()
    for batch in batches:
        pos, n = 0, batch.num_rows
        while pos < n:
            take = n - pos
            if max_part_bytes is not None:
                if sink.rows and sink.size() >= max_part_bytes:
                    sink.close()
                    done.append((path, sink.rows))
                    done_rows += sink.rows
                    done_bytes += os.path.getsize(path)
                    path, sink = open_next()
                rows_so_far, bytes_so_far = done_rows + sink.rows, done_bytes + sink.size()
                if rows_so_far and bytes_so_far:
                    room = max_part_bytes - sink.size()
                    take = max(1, min(take, int(room * rows_so_far / bytes_so_far)))
                else:  # nothing written yet: guess from the in-memory size of the batch
                    per_row = max(1.0, batch.nbytes / n)
                    take = max(1, min(take, int(max_part_bytes / per_row)))
            sink.write(batch.slice(pos, take))
            pos += take
    sink.close()
    done.append((path, sink.rows))
    return done


def build_output(
    storage: Storage,
    part_urls: list[str],
    dest_prefix: str,
    *,
    fmt: Fmt,
    gzip: bool,
    fields: Mapping[str, str],
    max_part_bytes: int | None = None,
    extras: Extras = _NO_EXTRAS,
) -> list[OutputFile]:
    """Build ``{dest_prefix}/result.{ext}`` from the parts, in order (with ``extras``).

    Over ``max_part_bytes`` the output is split into ``result-00001.{ext}``, ... instead, each
    a complete file of whole rows. Returns the files, the first one first. Earlier results of
    the same extension under ``dest_prefix`` are replaced.
    """
    ext = _ext(fmt, gzip)
    dest_local = storage.local_path(dest_prefix)
    if dest_local is not None:
        os.makedirs(dest_local, exist_ok=True)
        work = os.path.join(dest_local, f".build-{secrets.token_hex(6)}")
        os.makedirs(work)
    else:
        work = tempfile.mkdtemp(prefix="shoal-output-")
    try:
        written = _write_files(
            _source(storage, part_urls, fmt, fields, extras),
            work,
            ext,
            _sink_factory(fmt, gzip, fields, max_part_bytes, extras),
            max_part_bytes,
        )
        prefix = dest_prefix.rstrip("/")
        stale = re.compile(rf"result(-\d{{5}})?\.{re.escape(ext)}$")
        for old in storage.list(prefix):
            if stale.match(old.rsplit("/", 1)[-1]):
                storage.rm(old)
        files = []
        for i, (path, rows) in enumerate(written, start=1):
            name = f"result.{ext}" if len(written) == 1 else f"result-{i:05d}.{ext}"
            size = os.path.getsize(path)
            url = f"{prefix}/{name}"
            storage.put_file(path, url)
            files.append(OutputFile(url=url, rows=rows, size_bytes=size))
        return files
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stream_output(
    storage: Storage,
    part_urls: list[str],
    *,
    fmt: Fmt,
    fields: Mapping[str, str],
    extras: Extras = _NO_EXTRAS,
) -> Iterator[bytes]:
    """The whole result so far in ``fmt`` (uncompressed), as chunks for a streaming response.

    NDJSON and CSV are encoded batch by batch as they are read; Parquet needs its footer at the
    end, so it is built into a temp file first and then streamed.
    """
    if fmt == "ndjson":
        for table in _ndjson_batches(storage, part_urls, extras):
            yield bytes(_lines_bytes(table))
        return
    if fmt == "csv":
        yield _encode_csv(flat_schema(fields, fmt, extras).empty_table(), True)
        for table in _flat_batches(storage, part_urls, fields, fmt, extras):
            yield _encode_csv(table, False)
        return
    with tempfile.TemporaryDirectory(prefix="shoal-stream-") as work:
        [(path, _)] = _write_files(
            _flat_batches(storage, part_urls, fields, fmt, extras),
            work,
            "parquet",
            _sink_factory(fmt, False, fields, None, extras),
            None,
        )
        with open(path, "rb") as fh:
            while chunk := fh.read(_STREAM_CHUNK):
                yield chunk
