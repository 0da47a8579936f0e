"""Reads and writes of accounts, keys, jobs and chunk counters."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shoal.contract import FINAL_STATUSES
from shoal.errors import LimitExceeded

from ._accounts import AccountAdmin
from ._db import session_scope
from ._schedules import ScheduleRecords
from ._tables import (
    AccountRow,
    ApiKeyRow,
    ChunkRow,
    IdempotencyRow,
    JobRow,
    UploadRow,
    WebhookEventRow,
    utcnow,
)
from ._webhooks import WebhookRecords

#: ``Retry-After`` of a 429 for too many active jobs: about the time a small job takes.
ACTIVE_JOBS_RETRY_AFTER_S = 10


def new_id(prefix: str, nbytes: int = 6) -> str:
    """``job_3F2D1A77B0E1``-style ids: a prefix and random uppercase hex."""
    return f"{prefix}_{secrets.token_hex(nbytes).upper()}"


def hash_key(key: str) -> str:
    # API keys are 32 random bytes: a plain SHA-256 is enough (no dictionary to attack).
    return hashlib.sha256(key.encode()).hexdigest()


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything Shoal stores is UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Counters:
    done: int = 0
    errored: int = 0
    credits: int = 0
    chunks_finished: int = 0


class Store(WebhookRecords, ScheduleRecords, AccountAdmin):
    """The job store. One instance per process is enough; it holds only the URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    # accounts and keys -------------------------------------------------------------------
    def get_or_create_account(self, name: str) -> tuple[AccountRow, bool]:
        with session_scope(self.url) as s:
            row = s.scalar(select(AccountRow).where(AccountRow.name == name))
            if row is not None:
                return row, False
            row = AccountRow(
                id=new_id("acct"),
                name=name,
                plan={},  # the operator's defaults apply until set (shoal.account_plans)
                webhook_secret="whsec_" + secrets.token_urlsafe(24),
            )
            s.add(row)
        return row, True

    def get_account(self, account_id: str) -> AccountRow | None:
        with session_scope(self.url) as s:
            return s.get(AccountRow, account_id)

    def set_webhook_secret(self, account_id: str, secret: str) -> None:
        with session_scope(self.url) as s:
            s.execute(
                update(AccountRow).where(AccountRow.id == account_id).values(webhook_secret=secret)
            )

    def set_plan(self, account_id: str, plan: dict[str, int]) -> None:
        """Replace the account's own plan values (``shoal.account_plans`` fills in the rest)."""
        with session_scope(self.url) as s:
            s.execute(update(AccountRow).where(AccountRow.id == account_id).values(plan=plan))

    def count_accounts(self) -> int:
        with session_scope(self.url) as s:
            return s.scalar(select(func.count()).select_from(AccountRow)) or 0

    def create_key(self, account_id: str) -> str:
        """A new API key for the account; only its hash is stored, so return it now or never."""
        key = "sk_" + secrets.token_urlsafe(32)
        with session_scope(self.url) as s:
            s.add(
                ApiKeyRow(
                    id=new_id("key"), account_id=account_id, key_hash=hash_key(key), prefix=key[:8]
                )
            )
        return key

    def account_for_key(self, key: str) -> AccountRow | None:
        with session_scope(self.url) as s:
            return s.scalar(
                select(AccountRow)
                .join(ApiKeyRow, ApiKeyRow.account_id == AccountRow.id)
                .where(ApiKeyRow.key_hash == hash_key(key))
            )

    # jobs ------------------------------------------------------------------------------
    def insert_job(self, row: JobRow, *, max_active: int | None = None) -> JobRow:
        """Insert a new job. With ``max_active``, raise ``LimitExceeded`` instead when the
        account already has that many jobs queued or running."""
        with session_scope(self.url) as s:
            if max_active is not None:
                _lock_account(s, row.account_id)
                _check_active(s, row.account_id, max_active)
            s.add(row)
        return row

    def insert_job_once(
        self,
        row: JobRow,
        key: str,
        body_hash: str,
        *,
        not_before: datetime,
        max_active: int | None = None,
    ) -> IdempotencyRow:
        """Insert ``row`` with its idempotency key in one transaction, unless the account holds
        ``key`` already (from ``not_before`` on): then insert nothing and return the holder's
        record. The returned record's ``job_id`` is ``row.id`` when this call won.
        ``max_active`` as in :meth:`insert_job` (a held key answers before the limit)."""
        try:
            with session_scope(self.url) as s:
                if max_active is not None:
                    _lock_account(s, row.account_id)
                    held = _live_key(s, row.account_id, key, not_before)
                    if held is not None:
                        return held
                    _check_active(s, row.account_id, max_active)
                # an expired record of the key gives way (the unique key forbids two rows)
                s.execute(
                    delete(IdempotencyRow).where(
                        IdempotencyRow.account_id == row.account_id,
                        IdempotencyRow.key == key,
                        IdempotencyRow.created_at < not_before,
                    )
                )
                s.add(row)
                s.flush()  # the job first: the key row refers to it
                record = IdempotencyRow(
                    account_id=row.account_id,
                    key=key,
                    body_hash=body_hash,
                    job_id=row.id,
                    created_at=row.created_at,
                )
                s.add(record)
                s.flush()
            return record
        except IntegrityError:
            # a concurrent request with the same key committed first: its job is the job
            held = self.get_idempotency(row.account_id, key, not_before=not_before)
            if held is None:
                raise
            return held

    def count_active_jobs(self, account_id: str) -> int:
        """Jobs of the account that are queued or running."""
        with session_scope(self.url) as s:
            return _count_active(s, account_id)

    def get_idempotency(
        self, account_id: str, key: str, *, not_before: datetime
    ) -> IdempotencyRow | None:
        """The account's live record of ``key`` (created at or after ``not_before``)."""
        with session_scope(self.url) as s:
            return _live_key(s, account_id, key, not_before)

    def release_idempotency(self, account_id: str, key: str, job_id: str) -> None:
        """Forget ``key`` if it still points at ``job_id`` (that job never got to run)."""
        with session_scope(self.url) as s:
            s.execute(
                delete(IdempotencyRow).where(
                    IdempotencyRow.account_id == account_id,
                    IdempotencyRow.key == key,
                    IdempotencyRow.job_id == job_id,
                )
            )

    def purge_idempotency(self, before: datetime) -> int:
        """Remove key records created before ``before``; returns how many."""
        with session_scope(self.url) as s:
            res = s.execute(delete(IdempotencyRow).where(IdempotencyRow.created_at < before))
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def get_job(self, job_id: str, account_id: str | None = None) -> JobRow | None:
        with session_scope(self.url) as s:
            row = s.get(JobRow, job_id)
        if row is None or (account_id is not None and row.account_id != account_id):
            return None
        return row

    def list_jobs(
        self,
        account_id: str,
        statuses: list[str] | None,
        limit: int,
        offset: int,
        schedule_id: str | None = None,
    ) -> tuple[list[JobRow], int]:
        where = [JobRow.account_id == account_id]
        if statuses:
            where.append(JobRow.status.in_(statuses))
        if schedule_id is not None:
            where.append(JobRow.schedule_id == schedule_id)
        with session_scope(self.url) as s:
            total = s.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
            rows = s.scalars(
                select(JobRow)
                .where(*where)
                .order_by(JobRow.created_at.desc(), JobRow.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return list(rows), total

    def nonfinal_jobs(self) -> list[JobRow]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(JobRow).where(JobRow.status.not_in(FINAL_STATUSES))).all())

    def update_job(self, job_id: str, **values: Any) -> None:
        with session_scope(self.url) as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def mark_running(self, job_id: str, flow_run_id: str | None, attempt: int = 0) -> JobRow:
        """Make ``flow_run_id`` (the job's run number ``attempt``: 0 first, n the n-th resume)
        the job's running flow run, unless a later attempt already owns the job.

        One conditional UPDATE, so of two runs of one job the later attempt always wins, however
        their starts interleave with the resumer's ``claim_resume``; the caller compares the
        returned row's ``resume_count`` and ``flow_run_id`` with its own to learn whether it
        owns the job. Keeps the first ``started_at`` across resumes; a final job is unchanged."""
        with session_scope(self.url) as s:
            values: dict[str, Any] = {
                "status": "running",
                "started_at": func.coalesce(JobRow.started_at, utcnow()),
                "resume_count": attempt,
            }
            if flow_run_id:
                values["flow_run_id"] = flow_run_id
            s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status.not_in(FINAL_STATUSES),
                    func.coalesce(JobRow.resume_count, 0) <= attempt,
                )
                .values(**values)
            )
            row = s.get(JobRow, job_id)
            if row is None:
                raise LookupError(job_id)
        return row

    def claim_resume(self, job_id: str, attempt: int, flow_run_id: str) -> bool:
        """Record ``flow_run_id`` as the job's resume number ``attempt``, once: a conditional
        UPDATE (compare-and-set on ``resume_count``), so of two resumers only one records, and
        a run that already started itself as this attempt (``mark_running``) keeps the job."""
        with session_scope(self.url) as s:
            res = s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status.not_in(FINAL_STATUSES),
                    func.coalesce(JobRow.resume_count, 0) < attempt,
                )
                .values(resume_count=attempt, flow_run_id=flow_run_id)
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def run_owner(self, job_id: str) -> tuple[str | None, int]:
        """``(flow_run_id, resume_count)``: which run of the job owns it now."""
        with session_scope(self.url) as s:
            found = s.execute(
                select(JobRow.flow_run_id, JobRow.resume_count).where(JobRow.id == job_id)
            ).first()
            if found is None:
                raise LookupError(job_id)
            return found[0], found[1] or 0

    def request_cancel(self, job_id: str) -> bool:
        """Set the cancel flag; False when the job is already final."""
        with session_scope(self.url) as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.not_in(FINAL_STATUSES))
                .values(cancel_requested_at=func.coalesce(JobRow.cancel_requested_at, utcnow()))
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def cancel_requested(self, job_id: str) -> bool:
        """True once cancel was asked, and for a job whose row is gone (its account was
        removed): a run between chunks stops either way."""
        with session_scope(self.url) as s:
            found = s.execute(select(JobRow.cancel_requested_at).where(JobRow.id == job_id)).first()
            return found is None or found[0] is not None

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        event: Callable[[JobRow], WebhookEventRow | None] | None = None,
        **values: Any,
    ) -> bool:
        """Write a final status once; False when the job was already final.

        ``event`` makes the webhook event of the now final row (or None); it is inserted in
        the same transaction, so a job that ended has its event exactly once, crash or not."""
        assert status in FINAL_STATUSES
        with session_scope(self.url) as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.not_in(FINAL_STATUSES))
                .values(status=status, completed_at=utcnow(), **values)
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                return False
            final = s.get(JobRow, job_id) if event is not None else None
            made = event(final) if event is not None and final is not None else None
            if made is not None:
                s.add(made)
            return True

    # chunk counters ----------------------------------------------------------------------
    def record_chunk(
        self, job_id: str, chunk_index: int, counters: Counters, *, finished: bool, exact: bool
    ) -> None:
        """Store a chunk's counters. Live updates only raise them (counters never go back);
        ``exact`` (from the written part) sets them as they are."""
        with session_scope(self.url) as s:
            row = s.get(ChunkRow, (job_id, chunk_index))
            if row is None:
                row = ChunkRow(job_id=job_id, chunk_index=chunk_index, done=0, errored=0, credits=0)
                s.add(row)
                try:
                    s.flush()
                except IntegrityError:  # a concurrent writer created it first
                    s.rollback()
                    row = s.get(ChunkRow, (job_id, chunk_index))
                    assert row is not None
            if exact:
                row.done, row.errored, row.credits = (
                    counters.done,
                    counters.errored,
                    counters.credits,
                )
            else:
                row.done = max(row.done, counters.done)
                row.errored = max(row.errored, counters.errored)
                row.credits = max(row.credits, counters.credits)
            row.finished = int(finished)
            row.updated_at = utcnow()

    def counters(self, job_id: str) -> Counters:
        with session_scope(self.url) as s:
            done, errored, credits, fin = s.execute(
                select(
                    func.coalesce(func.sum(ChunkRow.done), 0),
                    func.coalesce(func.sum(ChunkRow.errored), 0),
                    func.coalesce(func.sum(ChunkRow.credits), 0),
                    func.coalesce(func.sum(case((ChunkRow.finished == 1, 1), else_=0)), 0),
                ).where(ChunkRow.job_id == job_id)
            ).one()
        return Counters(int(done), int(errored), int(credits), int(fin))

    def finished_chunks(self, job_id: str) -> set[int]:
        with session_scope(self.url) as s:
            return set(
                s.scalars(
                    select(ChunkRow.chunk_index).where(
                        ChunkRow.job_id == job_id, ChunkRow.finished == 1
                    )
                ).all()
            )

    # retention --------------------------------------------------------------------------
    def list_accounts(self) -> list[AccountRow]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(AccountRow).order_by(AccountRow.id)).all())

    def results_to_remove(
        self, account_id: str, *, ended_before: datetime, now: datetime, limit: int = 500
    ) -> list[JobRow]:
        """The account's ended jobs whose files are still kept although they ended before
        ``ended_before`` and their download link has expired by ``now``."""
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(JobRow)
                    .where(
                        JobRow.account_id == account_id,
                        JobRow.status.in_(FINAL_STATUSES),
                        JobRow.completed_at < ended_before,
                        JobRow.results_removed_at.is_(None),
                        (JobRow.output_expires_at.is_(None)) | (JobRow.output_expires_at <= now),
                    )
                    .order_by(JobRow.completed_at)
                    .limit(limit)
                ).all()
            )

    def prune_chunk_counters(self, ended_before: datetime) -> int:
        """Drop the live chunk counters of jobs that ended before ``ended_before`` (their
        final counters are on the job row); returns how many rows went."""
        ended = select(JobRow.id).where(
            JobRow.status.in_(FINAL_STATUSES), JobRow.completed_at < ended_before
        )
        with session_scope(self.url) as s:
            res = s.execute(delete(ChunkRow).where(ChunkRow.job_id.in_(ended)))
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    # uploads ----------------------------------------------------------------------------
    def insert_upload(self, row: UploadRow) -> UploadRow:
        with session_scope(self.url) as s:
            s.add(row)
        return row

    def get_upload(self, upload_id: str, account_id: str | None = None) -> UploadRow | None:
        """The upload, or None when unknown (or another account's, given ``account_id``)."""
        with session_scope(self.url) as s:
            row = s.get(UploadRow, upload_id)
        if row is None or (account_id is not None and row.account_id != account_id):
            return None
        return row

    def uploads_created_before(self, before: datetime, limit: int = 500) -> list[UploadRow]:
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(UploadRow)
                    .where(UploadRow.created_at < before)
                    .order_by(UploadRow.created_at)
                    .limit(limit)
                ).all()
            )

    def delete_upload(self, upload_id: str) -> None:
        with session_scope(self.url) as s:
            s.execute(delete(UploadRow).where(UploadRow.id == upload_id))

    def now(self) -> datetime:
        return datetime.now(UTC)


def _lock_account(s: Session, account_id: str) -> None:
    # A no-op write on the account row: concurrent inserts of one account queue up behind it
    # (SQLite's write lock, PostgreSQL's row lock), so "count, then insert" cannot race.
    s.execute(update(AccountRow).where(AccountRow.id == account_id).values(id=AccountRow.id))


def _count_active(s: Session, account_id: str) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.account_id == account_id, JobRow.status.in_(("queued", "running")))
        )
        or 0
    )


def _live_key(s: Session, account_id: str, key: str, not_before: datetime) -> IdempotencyRow | None:
    return s.scalar(
        select(IdempotencyRow).where(
            IdempotencyRow.account_id == account_id,
            IdempotencyRow.key == key,
            IdempotencyRow.created_at >= not_before,
        )
    )


def _check_active(s: Session, account_id: str, max_active: int) -> None:
    """Raise ``LimitExceeded`` at ``max_active`` queued or running jobs (lock the account
    row first: ``_lock_account``)."""
    active = _count_active(s, account_id)
    if active >= max_active:
        raise LimitExceeded(
            f"the account has {active} jobs queued or running, its plan allows "
            f"{max_active} at once; retry when one has ended",
            retry_after=ACTIVE_JOBS_RETRY_AFTER_S,
        )
