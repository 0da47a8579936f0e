"""SQLAlchemy 2 tables of the job store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: the server default of NOT NULL counters: a row written without them (by SQL, or by a process
#: older than the column during an upgrade) still holds a number (migration 0003)
ZERO = text("0")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class AccountRow(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(
        String(16), index=True, default="queued", server_default="queued"
    )
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    concurrency: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    urls_total: Mapped[int | None] = mapped_column(Integer)
    # final counters (while running they are the sum of job_chunks)
    urls_done: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    urls_errored: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    credits_used: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    flow_run_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    parent_job_id: Mapped[str | None] = mapped_column(String(40))
    resume_count: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    output_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # URLs per chunk, fixed when the job is first planned so a resumed run cuts the same chunks
    chunk_size: Mapped[int | None] = mapped_column(Integer)
    # set by the maintenance flow when retention removed the job's files
    results_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # a schedule's run: which schedule, and its number among the schedule's runs (1, 2, ...)
    schedule_id: Mapped[str | None] = mapped_column(String(40), index=True)
    run_number: Mapped[int | None] = mapped_column(Integer)
    # written when the job ends: the change report's summary and the quality gates' result
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ScheduleRow(Base):
    """A recurring job (``/v1/schedules``). The row is the source of truth; the Prefect
    deployment schedule that starts its runs (``prefect_schedule_id``) is re-created from it
    when missing. ``runs`` is also the last ``run_number`` given out (raised in the
    transaction that inserts the run's job, so two runs never share a number)."""

    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("account_id", "name", name="uq_schedules_account_name"),
        Index("ix_schedules_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    interval_s: Mapped[int | None] = mapped_column(Integer)
    # the job template: a ``POST /v1/jobs`` body as JSON
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    compare: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    conditional: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    paused: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    prefect_schedule_id: Mapped[str | None] = mapped_column(String(40))
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    skipped_runs: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    # the flow run last counted as skipped: a retried start of it does not count twice
    last_skipped_flow_run: Mapped[str | None] = mapped_column(String(40))
    last_job_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChunkRow(Base):
    """Live counters of one chunk, rewritten (never added to): a re-run chunk cannot count twice."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    done: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    errored: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    credits: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    finished: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyRow(Base):
    """An ``Idempotency-Key`` of one account and the job it created.

    The primary key (account, key) is the unique constraint that makes two concurrent requests
    with one key create one job: the row is inserted in the job's own transaction."""

    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class WebhookEventRow(Base):
    """The outbox: an event to deliver to a job's webhook, written in the transaction that ends
    the job. ``payload`` is the exact body every attempt sends. The dispatcher claims a due
    event by moving ``next_attempt_at`` past the attempt (a lease), so two never send at once.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("job_id", "type", name="uq_webhook_events_job_type"),
        Index("ix_webhook_events_due", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDeliveryRow(Base):
    """One attempt to deliver a webhook event."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job", "job_id", "requested_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    next_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UploadRow(Base):
    """An uploaded URL file: its counts and where its staged (normalized) copy is."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    format: Mapped[str] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    urls_valid: Mapped[int] = mapped_column(Integer)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # typed output fields the file's per-URL extract/selectors add (name -> type)
    fields: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # 1 when a usable row asks for the screenshot format: jobs reading the file get the
    # screenshot_url column (migration 0005)
    screenshots: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HostSlotRow(Base):
    """One holder's lease on slots of one host: ``SHOAL_MAX_PER_HOST`` across every job and
    worker (``shoal.store._hostslots``). A holder is one fetch engine of one process.

    ``expires_at`` is in epoch seconds of the database's clock (every worker reads the same
    one); ``wanted`` is how many more slots the holder asked for and did not get, the signal
    that makes the others shrink to their fair share."""

    __tablename__ = "host_slots"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    slots: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    wanted: Mapped[int] = mapped_column(Integer, default=0, server_default=ZERO)
    expires_at: Mapped[float] = mapped_column(index=True)  # a float column: double on PostgreSQL
