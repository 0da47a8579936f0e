"""Server defaults on the NOT NULL counters and states, and no NULL left in them.

A store an older Shoal grew by hand (``ALTER TABLE ADD COLUMN`` without a default) held NULL in
such columns on its old rows, where the code compares numbers (``resume_count >= n``). Rows get
the model's default, the columns become NOT NULL with a server default, so a row written by a
process that predates a column (a rolling upgrade) still gets a value. New NOT NULL columns
follow the same rule: a server default or a backfill before NOT NULL.

Revision ID: 0003_server_defaults
Revises: 0002_host_slots
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003_server_defaults"
down_revision = "0002_host_slots"
branch_labels = None
depends_on = None

_STATE = sa.String(16)
#: table -> column -> (SQL default, type); frozen here (the models may move on)
DEFAULTS: dict[str, dict[str, tuple[str, sa.types.TypeEngine[Any]]]] = {
    "jobs": {
        "status": ("'queued'", _STATE),
        "priority": ("'normal'", sa.String(8)),
        "urls_done": ("0", sa.Integer()),
        "urls_errored": ("0", sa.Integer()),
        "credits_used": ("0", sa.Integer()),
        "resume_count": ("0", sa.Integer()),
    },
    "job_chunks": {n: ("0", sa.Integer()) for n in ("done", "errored", "credits", "finished")},
    "webhook_events": {"state": ("'pending'", _STATE), "attempts": ("0", sa.Integer())},
    "webhook_deliveries": {"delivered": ("0", sa.Integer()), "duration_ms": ("0", sa.Integer())},
    "host_slots": {"slots": ("0", sa.Integer()), "wanted": ("0", sa.Integer())},
}


def upgrade() -> None:
    for table, columns in DEFAULTS.items():
        for column, (default, _) in columns.items():
            op.execute(f"UPDATE {table} SET {column} = {default} WHERE {column} IS NULL")
        with op.batch_alter_table(table) as batch:
            for column, (default, type_) in columns.items():
                batch.alter_column(
                    column, existing_type=type_, nullable=False, server_default=sa.text(default)
                )


def downgrade() -> None:
    for table, columns in DEFAULTS.items():
        with op.batch_alter_table(table) as batch:
            for column, (_, type_) in columns.items():
                batch.alter_column(column, existing_type=type_, server_default=None)
