"""Ending a job: build its output from the parts and write the final status once.

The output is built from every part file of the job, pieces of chunks that never finished
included (a UI cancel, a kill), each row once; ``urls_done``, ``urls_errored`` and
``credits_used`` are then those of the output's rows — not the live counters, which may lag the
files by a piece, and not credits of rows no file kept.

Used by the flow at its end, by the flow's cancellation hook (a cancel from the Prefect UI) and
by the reaper; all three go through ``finalize_job`` so a job ends the same way whatever ended it.
The transaction that writes the final status also records the job's webhook event
(``shoal.webhooks``); the worker delivers it later, so nothing here waits for a receiver.

A job that ends ``completed`` or ``partial`` then gets, before its output is built (the output's
``change`` column comes from it), its change report when it has ``compare.previous_job_id``
and that job ended ``completed``/``partial`` with its results kept (``shoal.changes``), and its
quality gates when it has ``quality`` (``shoal.quality``): a failed gate turns ``completed``
into ``partial``. Neither can fail the job: an error in them is logged, and the job ends
without that report (``changes`` or ``quality`` null).
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any

from shoal import changes, output, quality, screenshots, webhooks
from shoal.contract import FINAL_STATUSES, JobSpec
from shoal.jobs import COMPARABLE_STATUSES, link_expiry
from shoal.output import part_urls
from shoal.settings import Settings
from shoal.storage import Storage, get_storage
from shoal.store import JobRow, Store, get_store, utcnow

log = logging.getLogger(__name__)


def finalize_job(
    job_id: str, settings: Settings, *, cancelled: bool = False, error: str | None = None
) -> JobRow:
    """Build the output from whatever parts (and pieces) exist and set the final status.

    ``cancelled``: the job was stopped (cancel or lifetime); ``error`` says why when not a plain
    cancel. Without ``cancelled`` the status is ``completed`` or ``partial`` from the rows.
    Idempotent: a job already final is returned unchanged."""
    store = get_store(settings)
    storage = get_storage(settings)
    row = store.get_job(job_id)
    if row is None:
        raise LookupError(job_id)
    if row.status in FINAL_STATUSES:
        return row
    spec = JobSpec.model_validate(row.spec)
    parts = part_urls(storage, job_id)
    kept = output.count_kept(storage, parts)
    rows, errored, credits = kept.rows, kept.errored, kept.credits
    if cancelled and (row.urls_total is None or rows < row.urls_total):
        status = "cancelled"
    elif row.urls_total is not None and rows < row.urls_total:
        status, error = "failed", f"only {rows} of {row.urls_total} URLs were processed"
    else:
        status = "partial" if errored else "completed"
    expires_at = utcnow() + link_expiry(spec, settings)
    report = gates = None
    if status in COMPARABLE_STATUSES:
        report = _change_report(store, storage, row, spec)
        gates = _quality(storage, job_id, parts, spec, rows, errored, report)
        if gates is not None and not gates["passed"]:
            status = "partial"
    labels = None
    if spec.compare is not None:
        labels = report.labels if report is not None else changes.RowLabels()
    files = output.build_output(
        storage,
        parts,
        storage.url("jobs", job_id, "output"),
        fmt=spec.output.format,
        gzip=spec.output.gzip,
        fields=spec.fields,
        max_part_bytes=settings.max_part_bytes,
        extras=output.Extras(
            change=labels,
            not_modified=spec.conditional,
            screenshot_url=spec.screenshots,
            # the links in the files expire with the link to the files
            screenshot_link=screenshots.links(settings, job_id, expires_at),
        ),
    )
    store.finish(
        job_id,
        status,
        event=webhooks.event_maker(settings, store),
        urls_done=rows,
        urls_errored=errored,
        credits_used=credits,
        error=error,
        outputs=[
            {
                "name": posixpath.basename(f.url),
                "url": f.url,
                "rows": f.rows,
                "size_bytes": f.size_bytes,
            }
            for f in files
        ],
        output_expires_at=expires_at,
        changes=report.summary(settings, job_id, expires_at) if report is not None else None,
        quality=gates,
    )
    log.info("job %s ended %s: %d rows, %d errored", job_id, status, rows, errored)
    return store.get_job(job_id) or row


def _change_report(
    store: Store, storage: Storage, row: JobRow, spec: JobSpec
) -> changes.ChangeReport | None:
    """The job's change report, or None: nothing to compare with, or it failed (logged)."""
    previous_id = spec.compare.previous_job_id if spec.compare is not None else None
    if previous_id is None:
        return None
    previous = store.get_job(previous_id)
    if (
        previous is None
        or previous.account_id != row.account_id
        or previous.status not in COMPARABLE_STATUSES
        or previous.results_removed_at is not None
    ):
        log.warning("job %s: no change report, job %s cannot be compared", row.id, previous_id)
        return None
    try:
        return changes.report_changes(storage, row.id, spec, previous_id)
    except Exception:
        log.exception("job %s: the change report against %s failed", row.id, previous_id)
        return None


def _quality(
    storage: Storage,
    job_id: str,
    parts: list[str],
    spec: JobSpec,
    rows: int,
    errored: int,
    report: changes.ChangeReport | None,
) -> dict[str, Any] | None:
    """The quality gates' result, or None: the job has none, or measuring failed (logged)."""
    if spec.quality is None:
        return None
    try:
        measures = quality.measure(
            storage,
            parts,
            spec.quality,
            spec.fields,
            rows=rows,
            errored=errored,
            comparison=report.comparison if report is not None else None,
        )
        return quality.check(spec.quality, measures)
    except Exception:
        log.exception("job %s: measuring its quality gates failed", job_id)
        return None


def fail_job(job_id: str, settings: Settings, error: str) -> JobRow | None:
    """Mark a job ``failed`` with ``error`` (no output); a job already final stays as it is."""
    store = get_store(settings)
    c = store.counters(job_id)
    store.finish(
        job_id,
        "failed",
        event=webhooks.event_maker(settings, store),
        error=error,
        urls_done=c.done,
        urls_errored=c.errored,
        credits_used=c.credits,
    )
    return store.get_job(job_id)
