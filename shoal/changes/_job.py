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
    an array of labels (null where a row has none: errored, no key, or nothing compared)."""

    def __init__(self, labels: pl.DataFrame | None = None) -> None:
        self._labels = labels if labels is not None else _no_labels()
        self._index = self._labels.get_column("input_index")

    @classmethod
    def read(cls, storage: Storage, job_id: str) -> RowLabels | None:
        """A job's stored labels; None when it has no change report."""
        url = labels_url(storage, job_id)
        try:
            with storage.open(url, "rb") as fh:
                table = pq.read_table(fh)
        except FileNotFoundError:
            return None
        return cls(pl.from_arrow(table).with_columns(pl.col("change").cast(ROW_CHANGE)))  # type: ignore[union-attr]

    def __call__(self, indices: pa.Array | pa.ChunkedArray) -> pa.Array:
        n = len(indices)
        if n == 0 or self._index.is_empty():
            return pa.nulls(n, pa.string())
        lo, hi = pc.min_max(indices).values()
        # the labels are sorted: look up only the slice a batch can hit
        start = int(self._index.search_sorted(lo.as_py(), side="left"))
        end = int(self._index.search_sorted(hi.as_py(), side="right"))
        window = self._labels.slice(start, end - start)
        asked = pl.DataFrame({"input_index": pl.Series(indices, dtype=pl.Int64)})
        found = asked.join(window, on="input_index", how="left", maintain_order="left")
        return found.get_column("change").cast(pl.String).to_arrow().cast(pa.string())

    def label_rows(self, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        """Set ``change`` on result dicts (a results page), in place; the rows."""
        if rows:
            got = self(pa.array([r["input_index"] for r in rows], pa.int64())).to_pylist()
            for row, change in zip(rows, got, strict=True):
                row["change"] = change
        return rows


def _no_labels() -> pl.DataFrame:
    return pl.DataFrame(schema={"input_index": pl.Int64, "change": ROW_CHANGE})
