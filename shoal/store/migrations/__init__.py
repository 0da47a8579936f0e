"""Alembic migrations of the job store (run by ``shoal.store._migrate``, never by hand)."""
