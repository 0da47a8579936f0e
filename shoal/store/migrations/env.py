"""Alembic's environment: migrations run on the connection ``shoal.store._migrate`` hands over,
inside its transaction and lock (never on a connection of their own)."""

from __future__ import annotations

from alembic import context

from shoal.store._tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `shoal db upgrade` (shoal.store._migrate)")

# render_as_batch: SQLite alters a table by copying it (ALTER COLUMN does not exist there);
# on PostgreSQL batch operations are plain ALTERs
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
