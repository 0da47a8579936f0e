"""Conditional fetch: ask with the previous run's validators; a ``304`` carries its row forward.

A job with ``conditional: true`` and ``compare.previous_job_id`` (a schedule's runs get both)
sends ``If-None-Match`` / ``If-Modified-Since`` for each URL whose row in that previous job was
``ok`` and kept the response's ``ETag`` / ``Last-Modified`` (part columns ``etag`` and
``last_modified``). A ``304`` gives an ``ok`` row with ``not_modified: true``, ``http_status``
304, ``credits`` 0 and the previous row's content (``data``, ``content_hash`` and whichever of
``html``, ``markdown``, ``text``, ``links``, ``metadata`` it had); its validators are the 304's
own where it sent them, else the previous ones, so the run after can ask again.

Finding a URL's previous row scales with the chunk, not with the job. Once per job (at plan
time, ``prepare``), this job's staged input is joined on URL with the previous job's ok rows
that have a validator (DuckDB, streaming both sides) into ``jobs/<id>/conditional.parquet``:
``input_index`` (this job's) → ``etag``, ``last_modified``, ``prev_index``, sorted by
``input_index`` in row groups of ``_GROUP_ROWS``. A chunk reads only the row groups of its own
range (their footers' min/max). The previous row's content is read only for a 304, by the row
group of the previous part holding ``prev_index`` (footers again), the last few kept in memory:
an input in the same order as last night's reads each previous row group once.

Measured (``bench/conditional_plan.py``, 1,000,000 URLs, local disk, 2 cores shared):
see that script's output in ``bench/RESULTS.md``. The alternatives it replaces: each chunk
reading the previous job's ``url`` and validator columns whole (one pass over 1M rows per
chunk: 200 chunks × the whole file), or a Python dict of 1M URLs in every chunk process.

No previous results (never, or removed by retention), a previous job asked for other content
(``extract``, ``selectors``, ``formats`` or ``render`` differ: its rows are not what this job
would produce) → nothing is asked conditionally. A previous row gone between plan and 304 →
the URL is fetched again without validators. A 304 to a request without validators of ours is
an error row ``http_304``.
"""

from __future__ import annotations

import bisect
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal.contract import JobSpec
from shoal.output import iter_part_batches, part_urls
from shoal.output._parts import RowSpan, open_part, read_span, row_spans
from shoal.storage import Storage
from shoal.store import Store

log = logging.getLogger(__name__)

#: rows per row group of the plan file: a chunk (250-5,000 URLs) reads 1-3 of them
_GROUP_ROWS = 4096
#: input lines per batch handed to DuckDB while the plan is built
_INPUT_BATCH = 65_536
#: previous row groups kept in memory per job and process (a row group is ≤ 1,024 rows)
_CACHED_SPANS = 4
#: what makes two jobs' rows alike: the options that decide a row's content
_CONTENT_OPTIONS = ("extract", "selectors", "formats", "render")
#: the previous row's columns a 304 carries forward
CARRIED = ("content_hash", "data_json", "html", "markdown", "text", "links_json", "metadata_json")
_PLAN_SCHEMA = pa.schema(
    [
        ("input_index", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("prev_index", pa.int64()),
    ]
)
_PREV_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("prev_index", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
    ]
)


@dataclass(frozen=True)
class Validators:
    """What to ask one URL with, and where its previous row is."""

    etag: str | None
    last_modified: str | None
    prev_index: int

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


def plan_url(storage: Storage, job_id: str) -> str:
    return storage.url("jobs", job_id, "conditional.parquet")


def previous_job_id(spec: JobSpec) -> str | None:
    """The job whose validators and rows a conditional job uses; None: not conditional."""
    if not spec.conditional or spec.compare is None:
        return None
    return spec.compare.previous_job_id


def content_differs(spec: dict[str, Any], previous: dict[str, Any]) -> str | None:
    """Why the previous job's rows are not what this job would produce, or None."""
    ours, theirs = spec.get("defaults") or {}, previous.get("defaults") or {}
    for name in _CONTENT_OPTIONS:
        if ours.get(name) != theirs.get(name):
            return f"its {name} differs"
    return None


def prepare_job(storage: Storage, store: Store, job_id: str, spec: JobSpec, input_url: str) -> int:
    """``prepare`` for a conditional job (``plan_job`` calls it once the input is staged): the
    URLs it can ask conditionally. Reads the previous job's record to judge its rows."""
    prev_id = previous_job_id(spec)
    if prev_id is None:
        return 0
    previous = store.get_job(prev_id)
    refuse = None
    if previous is None:
        refuse = f"no job {prev_id}"
    else:
        refuse = content_differs(spec.model_dump(), previous.spec or {})
    return prepare(storage, job_id, input_url, prev_id, refuse=refuse)


def prepare(
    storage: Storage,
    job_id: str,
    input_url: str,
    prev_job_id: str,
    *,
    refuse: str | None = None,
) -> int:
    """Write the job's plan file (once: a resumed run finds it); the URLs it can ask
    conditionally. ``refuse``: why not at all (an empty plan is written)."""
    url = plan_url(storage, job_id)
    if storage.exists(url):
        with open_part(storage, url) as pf:
            return int(pf.metadata.num_rows)
    prev_parts = [] if refuse else part_urls(storage, prev_job_id)
    if refuse or not prev_parts:
        log.info(
            "job %s: no conditional requests (%s)",
            job_id,
            refuse or f"no results of {prev_job_id} left",
        )
        storage.write_bytes_atomic(url, _parquet_bytes(_PLAN_SCHEMA.empty_table()))
        return 0
    import duckdb  # the plan's join only; chunks never load it

    fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
    try:
        cur = pa.RecordBatchReader.from_batches(_INPUT_SCHEMA, _input_batches(storage, input_url))
        prev = pa.RecordBatchReader.from_batches(_PREV_SCHEMA, _prev_batches(storage, prev_parts))
        con.register("cur", cur)
        con.register("prev", prev)
        con.execute(
            "COPY (SELECT c.i AS input_index, p.etag, p.last_modified, p.prev_index "
            "FROM cur c JOIN (SELECT * FROM prev QUALIFY row_number() OVER "
            "(PARTITION BY url ORDER BY prev_index) = 1) p ON c.url = p.url "
            f"ORDER BY c.i) TO '{tmp}' (FORMAT parquet, ROW_GROUP_SIZE {_GROUP_ROWS})"
        )
        con.close()
        with pq.ParquetFile(tmp) as pf:
            rows = int(pf.metadata.num_rows)
        storage.put_file(tmp, url)
    finally:
        con.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("job %s: %d URLs asked conditionally (from %s)", job_id, rows, prev_job_id)
    return rows


_INPUT_SCHEMA = pa.schema([("url", pa.string()), ("i", pa.int64())])


def _input_batches(storage: Storage, input_url: str) -> Iterator[pa.RecordBatch]:
    urls: list[str] = []
    first = 0
    with storage.open(input_url, "rb") as fh:
        for line in fh:
            urls.append(orjson.loads(line).get("url"))
            if len(urls) == _INPUT_BATCH:
                yield _input_batch(urls, first)
                first += len(urls)
                urls = []
    if urls:
        yield _input_batch(urls, first)


def _input_batch(urls: list[str], first: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(urls, pa.string()), pa.array(range(first, first + len(urls)), pa.int64())],
        schema=_INPUT_SCHEMA,
    )


def _prev_batches(storage: Storage, prev_parts: list[str]) -> Iterator[pa.RecordBatch]:
    cols = ["url", "input_index", "status", "etag", "last_modified"]
    for batch in iter_part_batches(storage, prev_parts, cols, batch_rows=_INPUT_BATCH):
        usable = pc.and_(
            pc.equal(batch.column("status"), "ok"),
            pc.or_(pc.is_valid(batch.column("etag")), pc.is_valid(batch.column("last_modified"))),
        )
        kept = batch.filter(usable)
        if kept.num_rows:
            yield pa.RecordBatch.from_arrays(
                [kept.column(c) for c in ("url", "input_index", "etag", "last_modified")],
                schema=_PREV_SCHEMA,
            )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


class Conditional:
    """One conditional job's plan and previous rows, in one process (``JobRuntime`` holds it).

    Thread-safe: chunks read their ranges, and 304s their previous rows, from worker
    threads."""

    def __init__(self, storage: Storage, store: Store, job_id: str, spec: JobSpec) -> None:
        prev = previous_job_id(spec)
        assert prev is not None, "not a conditional job"
        self.storage = storage
        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.prev_job_id = prev
        self._lock = threading.Lock()
        self._spans: list[RowSpan] | None = None
        self._starts: list[int] = []
        self._cache: OrderedDict[int, tuple[dict[int, int], pa.Table]] = OrderedDict()

    def for_chunk(self, input_url: str, first: int, count: int) -> dict[int, Validators]:
        """Validators of the URLs ``[first, first + count)`` of this job that have some
        (blocking: reads the plan's row groups of that range)."""
        url = plan_url(self.storage, self.job_id)
        if not self.storage.exists(url):  # plan_job writes it; a chunk run some other way
            prepare_job(self.storage, self.store, self.job_id, self.spec, input_url)
        out: dict[int, Validators] = {}
        last = first + count - 1
        with open_part(self.storage, url) as pf:
            meta = pf.metadata
            for rg in range(meta.num_row_groups):
                stats = meta.row_group(rg).column(0).statistics
                if stats is not None and stats.has_min_max and not stats.min <= last:
                    continue
                if stats is not None and stats.has_min_max and stats.max < first:
                    continue
                table = pf.read_row_group(rg)
                for i, etag, modified, prev in zip(
                    *(table.column(c).to_pylist() for c in _PLAN_SCHEMA.names), strict=True
                ):
                    if first <= i <= last:
                        out[i] = Validators(etag, modified, prev)
        return out

    def previous_row(self, prev_index: int) -> dict[str, Any] | None:
        """The carried columns of the previous job's row ``prev_index`` (decoded as
        ``rows_table`` takes them), or None when that row is gone (blocking)."""
        try:
            with self._lock:
                if self._spans is None:
                    self._spans = row_spans(self.storage, part_urls(self.storage, self.prev_job_id))
                    self._starts = [s.first for s in self._spans]
                k = bisect.bisect_right(self._starts, prev_index) - 1
                if k < 0 or prev_index > self._spans[k].last:
                    return None
                cached = self._cache.get(k)
                if cached is None:
                    table = read_span(self.storage, self._spans[k], ["input_index", *CARRIED])
                    pos = {v: n for n, v in enumerate(table.column("input_index").to_pylist())}
                    cached = self._cache[k] = (pos, table)
                    while len(self._cache) > _CACHED_SPANS:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(k)
        except FileNotFoundError:  # removed by retention since the plan was made
            return None
        pos, table = cached
        n = pos.get(prev_index)
        if n is None:
            return None
        row = {c: table.column(c)[n].as_py() for c in CARRIED}
        out: dict[str, Any] = {"content_hash": row["content_hash"]}
        for col, key in (
            ("data_json", "data"),
            ("links_json", "links"),
            ("metadata_json", "metadata"),
        ):
            if row[col] is not None:
                out[key] = orjson.loads(row[col])
        for key in ("html", "markdown", "text"):
            if row[key] is not None:
                out[key] = row[key]
        if "data" not in out:
            out["data"] = None
        return out
