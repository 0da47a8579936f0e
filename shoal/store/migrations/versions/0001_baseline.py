"""The job store of commit 55f2ba1 (before migrations): the tables of ``baseline.py``.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from shoal.store.migrations import baseline

revision = baseline.REVISION
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline.metadata().create_all(op.get_bind())


def downgrade() -> None:
    baseline.metadata().drop_all(op.get_bind())
