"""A job's run report: what an operator reads on the flow run's page when the job has ended.

Counts by error code and the hosts that failed most, read from the job's part files (only the
``url`` and ``error_code`` columns, so a million-row job costs a column scan, not a decode of
its pages; the reader keeps each row once), and the markdown that shows them beside the job's
status, counts, name, account and where its output is. Plain Python: the flow turns it into
Prefect artifacts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow.compute as pc

from shoal.output import iter_part_batches
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
) -> str:
    """The summary artifact: status and counts, errors by code, the top failing hosts."""
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
    if row.error:
        lines.append(f"| error | {_cell(row.error)} |")
    if report.by_code:
        lines += ["", "## Errors by code", "", "| code | URLs |", "|---|---|"]
        lines += [f"| `{code}` | {n} |" for code, n in report.by_code.most_common()]
    if report.by_host:
        lines += ["", f"## Hosts that failed most (top {top})", "", "| host | errored URLs |"]
        lines += ["|---|---|"]
        lines += [f"| {_cell(h)} | {n} |" for h, n in report.by_host.most_common(top)]
    return "\n".join(lines) + "\n"
