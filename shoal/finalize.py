"""Ending a job: build its output from the parts and write the final status once.

The output is built from every part file of the job, pieces of chunks that never finished
included (a UI cancel, a kill), each row once; ``urls_done``, ``urls_errored`` and
``credits_used`` are then those of the output's rows — not the live counters, which may lag the
files by a piece, and not credits of rows no file kept.

Used by the flow at its end, by the flow's cancellation hook (a cancel from the Prefect UI) and
by the reaper; all three go through ``finalize_job`` so a job ends the same way whatever ended it.
The transaction that writes the final status also records the job's webhook event
(``shoal.webhooks``); the worker delivers it later, so nothing here waits for a receiver.
"""

from __future__ import annotations

import logging
import posixpath

from shoal import output, webhooks
from shoal.contract import FINAL_STATUSES, JobSpec
from shoal.jobs import link_expiry
from shoal.output import part_urls
from shoal.settings import Settings
from shoal.storage import get_storage
from shoal.store import JobRow, get_store, utcnow

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
    files = output.build_output(
        storage,
        parts,
        storage.url("jobs", job_id, "output"),
        fmt=spec.output.format,
        gzip=spec.output.gzip,
        fields=spec.fields,
        max_part_bytes=settings.max_part_bytes,
    )
    kept = output.count_kept(storage, parts)
    rows, errored, credits = kept.rows, kept.errored, kept.credits
    if cancelled and (row.urls_total is None or rows < row.urls_total):
        status = "cancelled"
    elif row.urls_total is not None and rows < row.urls_total:
        status, error = "failed", f"only {rows} of {row.urls_total} URLs were processed"
    else:
        status = "partial" if errored else "completed"
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
        output_expires_at=utcnow() + link_expiry(spec, settings),
    )
    log.info("job %s ended %s: %d rows, %d errored", job_id, status, rows, errored)
    return store.get_job(job_id) or row


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
