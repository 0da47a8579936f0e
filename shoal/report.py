"""A job's run report: what an operator reads on the flow run's page when the job has ended.

Counts by error code and the hosts that failed most, read from the job's part files (only the
``url`` and ``error_code`` columns, so a million-row job costs a column scan, not a decode of
its pages; the reader keeps each row once), and the markdown that shows them beside the job's
status, counts, name, account and where its output is. Plain Python: the flow turns it into
Prefect artifacts.

A job with a change report also gets a table (``change_table``): its most changed fields, then
the added and removed keys, each with how many keys and an example from the changes file (the
first rows of it, ``changes_sample``), so "what changed since last night" reads on the run's
page; the summary names the quality gates that failed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoal.changes import changes_name
from shoal.contract import JobSpec
from shoal.output import iter_part_batches
from shoal.quality import describe
from shoal.storage import Storage
from shoal.store import JobRow

_COLUMNS = ["url", "error_code"]


@dataclass
class RunReport:
    """Errors of one job: by code, and by host (most first)."""

    by_code: Counter[str] = field(default_factory=Counter)
    by_host: Counter[str] = field(default_factory=Counter)


def run_report(storage: Storage, part_urls: list[str]) -> RunReport:
    """Count the errored rows of the parts by code and host (``iter_part_batches`` yields a row
    two attempts at a chunk wrote once)."""
    report = RunReport()
    for batch in iter_part_batches(storage, part_urls, _COLUMNS):
        errored = pc.is_valid(batch.column(1))
        if not pc.any(errored).as_py():
            continue
        rows = batch.filter(errored)
        for url, code in zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True):
            report.by_code[code] += 1
            report.by_host[_host(url)] += 1
    return report


def _host(url: str | None) -> str:
    try:
        return urlsplit(url or "").hostname or "(no host)"
    except ValueError:
        return "(invalid URL)"


def _cell(value: object) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def summary_markdown(
    row: JobRow,
    report: RunReport,
    *,
    account_name: str | None,
    output_location: str | None,
    top: int = 10,
    rendered: int = 0,
    render_s: float = 0.0,
) -> str:
    """The summary artifact: status and counts, errors by code, the top failing hosts.
    ``rendered``/``render_s``: pages the browser loaded and the seconds rendering took (summed
    over chunks and processes; shown when the job rendered)."""
    lines = [
        f"# Shoal job `{row.id}`" + (f" — {_cell(row.name)}" if row.name else ""),
        "",
        "| | |",
        "|---|---|",
        f"| status | **{row.status}** |",
        f"| account | {_cell(account_name or row.account_id)} |",
        f"| URLs | {row.urls_done} of {row.urls_total} |",
        f"| errored | {row.urls_errored} |",
        f"| credits | {row.credits_used} |",
        f"| resumes | {row.resume_count or 0} |",
        f"| output | {_cell(output_location) or '(none)'} |",
    ]
    if rendered or render_s:
        per = f", {render_s / rendered:.2f} s a page" if rendered else ""
        lines.append(f"| rendered | {rendered} pages in {render_s:.1f} s of rendering{per} |")
    if row.error:
        lines.append(f"| error | {_cell(row.error)} |")
    failed = describe(row.quality)
    if row.quality is not None:
        lines.append(f"| quality | {_cell(failed) if failed else 'passed'} |")
    if row.changes:
        c = row.changes
        lines.append(
            f"| changes since `{c['previous_job_id']}` | {c['added']} added, "
            f"{c['removed']} removed, {c['changed']} changed, {c['unchanged']} unchanged |"
        )
    if report.by_code:
        lines += ["", "## Errors by code", "", "| code | URLs |", "|---|---|"]
        lines += [f"| `{code}` | {n} |" for code, n in report.by_code.most_common()]
    if report.by_host:
        lines += ["", f"## Hosts that failed most (top {top})", "", "| host | errored URLs |"]
        lines += ["|---|---|"]
        lines += [f"| {_cell(h)} | {n} |" for h, n in report.by_host.most_common(top)]
    return "\n".join(lines) + "\n"


def changes_sample(storage: Storage, row: JobRow, limit: int = 1000) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a job's changes file (none without a change report)."""
    if not row.changes:
        return []
    spec = JobSpec.model_validate(row.spec)
    name = changes_name(spec)
    url = storage.url("jobs", row.id, "output", name)
    with storage.open(url, "rb") as raw:
        if spec.output.format == "parquet":
            pf = pq.ParquetFile(raw)
            batch = next(pf.iter_batches(batch_size=limit), None)
            return batch.to_pylist() if batch is not None else []
        with contextlib.ExitStack() as stack:
            fh: Any = stack.enter_context(gzip.open(raw)) if name.endswith(".gz") else raw
            text = io.TextIOWrapper(fh, encoding="utf-8")
            lines: Any = csv.DictReader(text) if spec.output.format == "csv" else text
            got = list(itertools.islice(lines, limit))
        if spec.output.format == "csv":
            return [{k: v or None for k, v in r.items()} for r in got]
        return [orjson.loads(line) for line in got]


def change_table(
    changes: Mapping[str, Any], sample: list[dict[str, Any]], top: int = 10
) -> list[dict[str, Any]]:
    """The rows of the change report's table artifact: the ``top`` most changed fields, then
    added and removed keys, each with its count of keys and an example from ``sample``."""
    first: dict[tuple[str, str | None], dict[str, Any]] = {}
    for r in sample:
        first.setdefault((r["change"], r.get("field")), r)
    fields = sorted(
        ((n, f) for f, n in (changes.get("fields") or {}).items() if n), key=lambda x: (-x[0], x[1])
    )
    rows = []
    for what, name, n in [
        *(("changed", f, n) for n, f in fields[:top]),
        ("added", None, changes.get("added", 0)),
        ("removed", None, changes.get("removed", 0)),
    ]:
        if not n:
            continue
        example = first.get((what, name), {})
        rows.append(
            {
                "change": what,
                "field": name or "",
                "keys": n,
                "example key": example.get("key") or "",
                "old": example.get("old") or "",
                "new": example.get("new") or "",
            }
        )
    return rows
