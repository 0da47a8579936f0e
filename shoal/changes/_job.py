"""A job's change report: compare its rows with an earlier job's, write the changes file beside
its output and the row labels beside its parts.

Files, under the job's storage folder (retention removes them with the job):

- ``output/changes.<ext>`` (``ndjson``/``csv``, gzip as the job's output, or ``parquet``): the
  changes file, columns ``key, change, field, old, new, url``; values as their JSON text;
- ``changes/rows.parquet``: ``input_index`` (sorted) and ``change`` of each row that has one —
  what puts ``change`` on the output's rows and on ``GET /v1/jobs/{id}/results``.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal import downloads
from shoal.changes._compare import ROW_CHANGE, Comparison, compare
from shoal.changes._scan import local_files, scan_rows
from shoal.contract import CompareSpec, JobSpec
from shoal.output import part_urls
from shoal.settings import Settings
from shoal.storage import Storage

_EXT = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}


def changes_name(spec: JobSpec) -> str:
    """The changes file's name: ``changes.<ext>`` in the job's output format."""
    fmt = spec.output.format
    gz = ".gz" if spec.output.gzip and fmt != "parquet" else ""
    return f"changes.{_EXT[fmt]}{gz}"


def labels_url(storage: Storage, job_id: str) -> str:
    return storage.url("jobs", job_id, "changes", "rows.parquet")


def changes_file(
    storage: Storage, job_id: str, spec: JobSpec, changes: dict[str, object] | None, name: str
) -> str | None:
    """Where the changes file ``name`` of a job is, when the job has a change report and that
    is its changes file's name (for the download link); else None."""
    if not changes or spec.compare is None or name != changes_name(spec):
        return None
    return storage.url("jobs", job_id, "output", name)


def compared_fields(spec: JobSpec, compare_spec: CompareSpec) -> dict[str, str]:
    """The fields compared, with their types: ``compare.fields``, default every extracted one
    (the key field is the key, not a compared value)."""
    names = compare_spec.fields or [f for f in spec.fields if f != compare_spec.key]
    return {f: spec.fields.get(f, "string") for f in names}


@dataclass
class ChangeReport:
    """A finished comparison and where its changes file went."""

    previous_job_id: str
    comparison: Comparison
    name: str
    url: str
    rows: int
    size_bytes: int

    @property
    def labels(self) -> RowLabels:
        """Each row's ``change``, for the output builder."""
        return RowLabels(self.comparison.labels)

    def summary(self, settings: Settings, job_id: str, expires_at: datetime) -> dict[str, object]:
        """The job row's ``changes``: counts and the changes file's signed link (the same
        link ``GET /v1/jobs/{id}`` would sign: same file, same expiry as the output's)."""
        return {
            "previous_job_id": self.previous_job_id,
            **self.comparison.counts(),
            "download_url": downloads.sign(settings, job_id, self.name, expires_at),
        }


def report_changes(
    storage: Storage, job_id: str, spec: JobSpec, previous_job_id: str
) -> ChangeReport:
    """Compare job ``job_id`` (its parts) with ``previous_job_id`` by ``spec.compare``; write
    the changes file and the row labels. Blocking; seconds for a million rows."""
    assert spec.compare is not None
    fields = compared_fields(spec, spec.compare)
    with tempfile.TemporaryDirectory(prefix="shoal-changes-") as work:
        os.makedirs(mine := os.path.join(work, "current"))
        os.makedirs(theirs := os.path.join(work, "previous"))
        current = scan_rows(local_files(storage, part_urls(storage, job_id), mine))
        previous = scan_rows(local_files(storage, part_urls(storage, previous_job_id), theirs))
        key = spec.compare.key
        result = compare(
            current,
            previous,
            key=key,
            fields=fields,
            key_type=None if key == "url" else spec.fields.get(key, "string"),
        )
        name = changes_name(spec)
        path = os.path.join(work, name)
        _write_changes(result.changes, path, spec)
        size = os.path.getsize(path)
        url = storage.url("jobs", job_id, "output", name)
        storage.put_file(path, url)
    write_labels(storage, job_id, result.labels)
    return ChangeReport(previous_job_id, result, name, url, result.changes.height, size)


def _write_changes(changes: pl.DataFrame, path: str, spec: JobSpec) -> None:
    frame = changes.with_columns(pl.col("change").cast(pl.String)).lazy()
    fmt, gz = spec.output.format, spec.output.gzip
    if fmt == "parquet":
        frame.sink_parquet(path, compression="zstd")
    elif fmt == "csv":
        frame.sink_csv(path, compression="gzip" if gz else "uncompressed", check_extension=False)
    else:
        frame.sink_ndjson(path, compression="gzip" if gz else "uncompressed", check_extension=False)


def write_labels(storage: Storage, job_id: str, labels: pl.DataFrame) -> None:
    """Store the row labels (``input_index`` sorted, ``change``) of a job."""
    table = labels.with_columns(pl.col("change").cast(pl.String)).to_arrow()
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=65_536)
    storage.write_bytes_atomic(labels_url(storage, job_id), buf.getvalue())


class RowLabels:
    """Each row's ``change`` by ``input_index``: a callable from an array of input indices to
    an array of labels (null where a row has none: errored, no key, or nothing compared).

    Read from storage (``read``), the labels are loaded when first asked: whole for a stream
    of batches (``__call__``; ~9 bytes a row), only the row groups a page's rows fall in for
    ``label_rows`` — reading a million labels whole took 0.4-2.3 s on a loaded machine, too
    much for a page of results."""

    def __init__(
        self, labels: pl.DataFrame | None = None, *, source: tuple[Storage, str] | None = None
    ) -> None:
        self._labels = labels if labels is not None or source else _no_labels()
        self._source = source

    @classmethod
    def read(cls, storage: Storage, job_id: str) -> RowLabels | None:
        """A job's stored labels; None when it has no change report."""
        url = labels_url(storage, job_id)
        if not storage.exists(url):
            return None
        return cls(source=(storage, url))

    def _load(self, lo: int | None = None, hi: int | None = None) -> pl.DataFrame:
        """The stored labels, or those of row groups that may hold ``lo..hi``."""
        assert self._source is not None
        storage, url = self._source
        with storage.open(url, "rb") as fh:
            pf = pq.ParquetFile(fh)
            groups = list(range(pf.metadata.num_row_groups))
            if lo is not None and hi is not None:
                groups = [g for g in groups if _may_hold(pf.metadata.row_group(g), lo, hi)]
            table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        return pl.DataFrame(pl.from_arrow(table))

    def _all(self) -> pl.DataFrame:
        if self._labels is None:
            self._labels = self._load()
        return self._labels

    def __call__(self, indices: pa.Array | pa.ChunkedArray) -> pa.Array:
        return _lookup(self._all(), indices)

    def label_rows(self, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        """Set ``change`` on result dicts (a results page), in place; the rows."""
        if not rows:
            return rows
        asked = pa.array([r["input_index"] for r in rows], pa.int64())
        if self._labels is None:
            lo, hi = (v.as_py() for v in pc.min_max(asked).values())
            got = _lookup(self._load(lo, hi), asked).to_pylist()
        else:
            got = self(asked).to_pylist()
        for row, change in zip(rows, got, strict=True):
            row["change"] = change
        return rows


def _may_hold(group: pq.RowGroupMetaData, lo: int, hi: int) -> bool:
    stats = group.column(0).statistics  # input_index, the first column
    if stats is None or not stats.has_min_max:
        return True
    return bool(stats.min <= hi and stats.max >= lo)


def _lookup(labels: pl.DataFrame, indices: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The labels of ``indices`` (sorted ``labels``: only the slice a batch can hit is joined)."""
    n = len(indices)
    index = labels.get_column("input_index")
    if n == 0 or index.is_empty():
        return pa.nulls(n, pa.string())
    lo, hi = pc.min_max(indices).values()
    start = int(index.search_sorted(lo.as_py(), side="left"))
    end = int(index.search_sorted(hi.as_py(), side="right"))
    window = labels.slice(start, end - start)
    asked = pl.DataFrame({"input_index": pl.Series(indices, dtype=pl.Int64)})
    found = asked.join(window, on="input_index", how="left", maintain_order="left")
    return found.get_column("change").cast(pl.String).to_arrow().cast(pa.string())


def _no_labels() -> pl.DataFrame:
    return pl.DataFrame(schema={"input_index": pl.Int64, "change": ROW_CHANGE})
