"""Retention: remove the files of jobs past their plan's retention, and prune old records.

Run by the ``maintenance`` flow on a schedule. A job's files (staged input, parts, output) are
removed once it ended more than ``retention_days`` (its account's plan) ago *and* its download
link has expired, so a link handed out is never cut short. The job row stays, with
``results_removed_at`` set: its results and downloads then answer ``410``. Uploads go after
``upload_retention_days`` unless a job that has not ended refers to one, or a schedule does
(each of its runs reads the upload, for as long as the schedule exists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shoal.account_plans import plan_for
from shoal.settings import Settings
from shoal.storage import get_storage
from shoal.store import get_store, utcnow

log = logging.getLogger(__name__)

#: Live chunk counters of an ended job are kept this long (its final counters are on the row).
CHUNK_COUNTERS_KEPT = timedelta(hours=1)


@dataclass
class RetentionReport:
    """What one maintenance pass removed."""

    jobs_removed: list[str] = field(default_factory=list)
    uploads_removed: list[str] = field(default_factory=list)
    idempotency_keys_purged: int = 0
    chunk_counters_pruned: int = 0
    failures: list[str] = field(default_factory=list)


def remove_expired(settings: Settings, now: datetime | None = None) -> RetentionReport:
    """One maintenance pass (see the module docstring). A job whose files could not be removed
    is reported in ``failures`` and tried again on the next pass."""
    now = now or utcnow()
    store = get_store(settings)
    storage = get_storage(settings)
    report = RetentionReport()
    for account in store.list_accounts():
        days = plan_for(account.plan, settings).retention_days
        while True:
            due = store.results_to_remove(
                account.id, ended_before=now - timedelta(days=days), now=now
            )
            due = [j for j in due if j.id not in report.failures]
            if not due:
                break
            for job in due:
                try:
                    storage.rm(storage.url("jobs", job.id), recursive=True)
                except Exception as exc:  # storage down: keep the row as it is, try next pass
                    log.warning("could not remove the files of %s: %s", job.id, exc)
                    report.failures.append(job.id)
                    continue
                store.update_job(job.id, results_removed_at=now)
                report.jobs_removed.append(job.id)
    _remove_old_uploads(settings, now, report)
    report.idempotency_keys_purged = store.purge_idempotency(
        now - timedelta(seconds=settings.idempotency_ttl_s)
    )
    report.chunk_counters_pruned = store.prune_chunk_counters(now - CHUNK_COUNTERS_KEPT)
    log.info(
        "retention: %d jobs' files and %d uploads removed, %d idempotency keys and %d chunk "
        "counters pruned",
        len(report.jobs_removed),
        len(report.uploads_removed),
        report.idempotency_keys_purged,
        report.chunk_counters_pruned,
    )
    return report


def _remove_old_uploads(settings: Settings, now: datetime, report: RetentionReport) -> None:
    """Remove uploads older than ``upload_retention_days``, except those a job that has not
    ended uses (it copies the upload when it starts; a resumed run may copy it again) and
    those a schedule's job uses (its next run reads it)."""
    store = get_store(settings)
    storage = get_storage(settings)
    before = now - timedelta(days=settings.upload_retention_days)
    needed = {(job.spec.get("source") or {}).get("upload_id") for job in store.nonfinal_jobs()}
    needed |= store.uploads_of_schedules()
    for upload in store.uploads_created_before(before, limit=10_000):
        if upload.id in needed:
            continue
        try:
            storage.rm(storage.url("uploads", upload.id), recursive=True)
        except Exception as exc:  # storage down: try again next pass
            log.warning("could not remove upload %s: %s", upload.id, exc)
            report.failures.append(upload.id)
            continue
        store.delete_upload(upload.id)
        report.uploads_removed.append(upload.id)
