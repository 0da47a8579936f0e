"""``uploads.screenshots``: whether a usable row of the file asks for the screenshot format.

A job's CSV/Parquet columns are fixed before its first part is written; a job reading an upload
takes ``screenshot_url`` among them when a row of the file asks for it, which the upload learns
as it reads its rows. 0 or 1 as the store's other flags; NOT NULL with a server default (0003's
rule): an upload stored before, or a row written by a process that predates the column, is one
whose rows ask for none, as the code before this read it.

Revision ID: 0005_upload_screenshots
Revises: 0004_schedules
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_upload_screenshots"
down_revision = "0004_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(
            sa.Column("screenshots", sa.Integer, nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("screenshots")
