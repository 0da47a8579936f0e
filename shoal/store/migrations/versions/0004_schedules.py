"""schedules, and the columns of a schedule's runs and their reports on ``jobs``.

``jobs`` gains ``schedule_id`` (indexed: ``GET /v1/jobs?schedule_id=``), ``run_number``,
``changes`` (the change report's summary) and ``quality`` (the quality gates' result); all
nullable, so an old row stays a job that no schedule ran.

Revision ID: 0004_schedules
Revises: 0003_server_defaults
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_schedules"
down_revision = "0003_server_defaults"
branch_labels = None
depends_on = None


def upgrade() -> None:
    zero = sa.text("0")
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("interval_s", sa.Integer, nullable=True),
        sa.Column("job", sa.JSON, nullable=False),
        sa.Column("compare", sa.JSON, nullable=True),
        sa.Column("conditional", sa.Integer, nullable=False, server_default=zero),
        sa.Column("quality", sa.JSON, nullable=True),
        sa.Column("paused", sa.Integer, nullable=False, server_default=zero),
        sa.Column("prefect_schedule_id", sa.String(40), nullable=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default=zero),
        sa.Column("skipped_runs", sa.Integer, nullable=False, server_default=zero),
        sa.Column("last_skipped_flow_run", sa.String(40), nullable=True),
        sa.Column("last_job_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "name", name="uq_schedules_account_name"),
    )
    op.create_index("ix_schedules_account_created", "schedules", ["account_id", "created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("schedule_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("run_number", sa.Integer, nullable=True))
        batch.add_column(sa.Column("changes", sa.JSON, nullable=True))
        batch.add_column(sa.Column("quality", sa.JSON, nullable=True))
    op.create_index("ix_jobs_schedule_id", "jobs", ["schedule_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_schedule_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("quality", "changes", "run_number", "schedule_id"):
            batch.drop_column(column)
    op.drop_index("ix_schedules_account_created", table_name="schedules")
    op.drop_table("schedules")
