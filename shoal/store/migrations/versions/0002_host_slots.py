"""host_slots: per-host leases shared by every job and worker (``SHOAL_MAX_PER_HOST``).

Revision ID: 0002_host_slots
Revises: 0001_baseline
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_host_slots"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # as create_all made it at 3d07662, so a store of then is stamped here (_migrate)
    op.create_table(
        "host_slots",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("wanted", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("host", "holder"),
    )
    op.create_index("ix_host_slots_holder", "host_slots", ["holder"])
    op.create_index("ix_host_slots_expires_at", "host_slots", ["expires_at"])


def downgrade() -> None:
    op.drop_table("host_slots")
