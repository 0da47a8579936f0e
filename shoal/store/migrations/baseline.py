"""The job store as Shoal created it at commit 55f2ba1 (2026-12-02): the first migration.

Frozen here as plain tables, not imported from ``shoal.store._tables``, because the models
move on and this revision must not. Shoal before migrations made these with ``create_all``
(``tests/fixtures/store_55f2ba1.sql`` is that DDL, and a test holds this file to it), so a store
of that time is stamped at this revision rather than created again (``shoal.store._migrate``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

REVISION = "0001_baseline"


def metadata() -> MetaData:
    """A new ``MetaData`` holding the 55f2ba1 tables (new each call: callers add to theirs)."""
    md = MetaData()
    ts = DateTime(timezone=True)
    Table(
        "accounts",
        md,
        Column("id", String(40), primary_key=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("plan", JSON, nullable=False),
        Column("webhook_secret", String(100), nullable=False),
        Column("created_at", ts, nullable=False),
    )
    Table(
        "api_keys",
        md,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("created_at", ts, nullable=False),
    )
    Table(
        "jobs",
        md,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("name", String(200)),
        Column("status", String(16), nullable=False, index=True),
        Column("priority", String(8), nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("spec", JSON, nullable=False),
        Column("urls_total", Integer),
        Column("urls_done", Integer, nullable=False),
        Column("urls_errored", Integer, nullable=False),
        Column("credits_used", Integer, nullable=False),
        Column("created_at", ts, nullable=False),
        Column("started_at", ts),
        Column("completed_at", ts),
        Column("cancel_requested_at", ts),
        Column("flow_run_id", String(40)),
        Column("error", Text),
        Column("parent_job_id", String(40)),
        Column("resume_count", Integer, nullable=False),
        Column("outputs", JSON),
        Column("output_expires_at", ts),
        Column("chunk_size", Integer),
        Column("results_removed_at", ts),
        Index("ix_jobs_account_created", "account_id", "created_at"),
    )
    Table(
        "job_chunks",
        md,
        Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False),
        Column("chunk_index", Integer, nullable=False),
        Column("done", Integer, nullable=False),
        Column("errored", Integer, nullable=False),
        Column("credits", Integer, nullable=False),
        Column("finished", Integer, nullable=False),
        Column("updated_at", ts, nullable=False),
        PrimaryKeyConstraint("job_id", "chunk_index"),
    )
    Table(
        "idempotency_keys",
        md,
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("key", String(255), nullable=False),
        Column("body_hash", String(64), nullable=False),
        Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False),
        Column("created_at", ts, nullable=False, index=True),
        PrimaryKeyConstraint("account_id", "key"),
    )
    Table(
        "webhook_events",
        md,
        Column("id", String(40), primary_key=True),
        Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("type", String(32), nullable=False),
        Column("url", Text, nullable=False),
        Column("payload", Text, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", ts),
        Column("created_at", ts, nullable=False),
        Column("updated_at", ts),
        UniqueConstraint("job_id", "type", name="uq_webhook_events_job_type"),
        Index("ix_webhook_events_due", "state", "next_attempt_at"),
    )
    Table(
        "webhook_deliveries",
        md,
        Column("id", String(40), primary_key=True),
        Column("event_id", String(40), ForeignKey("webhook_events.id"), nullable=False, index=True),
        Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False),
        Column("event_type", String(32), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("url", Text, nullable=False),
        Column("requested_at", ts, nullable=False),
        Column("status_code", Integer),
        Column("delivered", Integer, nullable=False),
        Column("error", Text),
        Column("duration_ms", Integer, nullable=False),
        Column("next_retry_at", ts),
        Index("ix_webhook_deliveries_job", "job_id", "requested_at"),
    )
    Table(
        "uploads",
        md,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("format", String(8), nullable=False),
        Column("size_bytes", Integer, nullable=False),
        Column("lines", Integer, nullable=False),
        Column("urls_valid", Integer, nullable=False),
        Column("errors", JSON, nullable=False),
        Column("fields", JSON, nullable=False),
        Column("url", Text, nullable=False),
        Column("created_at", ts, nullable=False),
        Index("ix_uploads_account_created", "account_id", "created_at"),
    )
    return md
