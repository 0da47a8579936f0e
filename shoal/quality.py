"""Quality gates: checks made when a job ends, so a run that "worked" but delivered garbage
does not end ``completed``.

The checks of ``QualitySpec`` and what each measures (docs/API.md "Quality gates"):

- ``min_rows``: the job's result rows (every processed URL, errored ones included);
- ``max_error_rate``: errored rows / result rows (no rows: 0);
- ``max_null_rate.<field>``: ok rows whose field is null or absent / ok rows. Errored rows
  have no data at all, so they count in ``max_error_rate``, not here. No ok rows: not checked;
- ``max_changed_rate``: changed keys / keys compared (changed + unchanged) of the change
  report. Without a change report (no previous job) it is not checked, and neither when no key
  was in both runs.

A failed check is ``{"check": "max_null_rate.price", "limit": 0.02, "value": 0.31}``; rates
are rounded to 6 decimals. Null counts read only ``status`` and ``data_json`` of the parts, one
JSON decode per row for every field at once (``shoal.changes.field_columns``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shoal.changes import Comparison, field_columns, local_files, scan_rows
from shoal.contract import QualitySpec
from shoal.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Measures:
    """What the checks look at."""

    rows: int
    errored: int
    ok: int
    nulls: dict[str, int] = field(default_factory=dict)
    #: keys in both runs and those of them that changed; None without a change report
    compared: int | None = None
    changed: int | None = None


def null_counts(
    storage: Storage, part_urls: list[str], fields: Mapping[str, str]
) -> tuple[int, dict[str, int]]:
    """Ok rows of the parts, and per field how many of them have it null or absent."""
    with tempfile.TemporaryDirectory(prefix="shoal-quality-") as work:
        rows = scan_rows(local_files(storage, part_urls, work)).filter(pl.col("status") == "ok")
        names = {f: f"_v{i}" for i, f in enumerate(fields)}
        try:
            return _count(rows, fields, names, text=False)
        except pl.exceptions.ComputeError as exc:  # a value that does not fit its type
            log.warning("quality: typed read failed (%s); reading values as text", exc)
            return _count(rows, fields, names, text=True)


def _count(
    rows: pl.LazyFrame, fields: Mapping[str, str], names: dict[str, str], *, text: bool
) -> tuple[int, dict[str, int]]:
    cols = field_columns(fields, names, text=text)
    got = rows.select(
        pl.len().alias("_ok"),
        *(c.is_null().sum().alias(names[f]) for f, c in zip(fields, cols, strict=True)),
    ).collect(engine="streaming")
    row = got.row(0, named=True)
    return int(row["_ok"]), {f: int(row[names[f]]) for f in fields}


def measure(
    storage: Storage,
    part_urls: list[str],
    spec: QualitySpec,
    fields: Mapping[str, str],
    *,
    rows: int,
    errored: int,
    comparison: Comparison | None,
) -> Measures:
    """The measures ``check`` needs for ``spec`` (null counts only for the fields it names)."""
    ok = rows - errored
    nulls: dict[str, int] = {}
    if spec.max_null_rate:
        wanted = {f: fields.get(f, "string") for f in spec.max_null_rate}
        ok, nulls = null_counts(storage, part_urls, wanted)
    m = Measures(rows=rows, errored=errored, ok=ok, nulls=nulls)
    if comparison is not None:
        m.compared = comparison.changed + comparison.unchanged
        m.changed = comparison.changed
    return m


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def check(spec: QualitySpec, m: Measures) -> dict[str, Any]:
    """``{"passed": bool, "failed": [{"check", "limit", "value"}, ...]}`` (checks in the
    order of the module docstring)."""
    failed: list[dict[str, Any]] = []
    if spec.min_rows is not None and m.rows < spec.min_rows:
        failed.append({"check": "min_rows", "limit": spec.min_rows, "value": m.rows})
    if spec.max_error_rate is not None:
        value = _rate(m.errored, m.rows)
        if value > spec.max_error_rate:
            failed.append({"check": "max_error_rate", "limit": spec.max_error_rate, "value": value})
    for name, limit in spec.max_null_rate.items():
        if m.ok == 0 or name not in m.nulls:
            continue
        value = _rate(m.nulls[name], m.ok)
        if value > limit:
            failed.append({"check": f"max_null_rate.{name}", "limit": limit, "value": value})
    if spec.max_changed_rate is not None and m.compared and m.changed is not None:
        value = _rate(m.changed, m.compared)
        if value > spec.max_changed_rate:
            failed.append(
                {"check": "max_changed_rate", "limit": spec.max_changed_rate, "value": value}
            )
    return {"passed": not failed, "failed": failed}


def describe(quality: Mapping[str, Any] | None) -> str | None:
    """The failed checks in a line (``max_null_rate.price 0.31 > 0.02``), or None when none
    failed — for the Prefect run's state message and the summary artifact."""
    if not quality or quality.get("passed", True):
        return None
    parts = []
    for f in quality.get("failed") or []:
        op = "<" if f["check"] == "min_rows" else ">"
        parts.append(f"{f['check']} {f['value']:g} {op} {f['limit']:g}")
    return "quality failed: " + ", ".join(parts)
