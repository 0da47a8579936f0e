"""The job store: accounts, hashed API keys, jobs, their live chunk counters and the
idempotency keys of job creation, schedules, the webhook outbox, and the host-slot leases that make
``SHOAL_MAX_PER_HOST`` hold across every job and worker. Its schema is migrated by Alembic
(``_migrate``: who migrates, and the lock that makes it one at a time).

SQLAlchemy 2; SQLite (WAL) by default, PostgreSQL by ``SHOAL_DATABASE_URL``.
"""

from functools import lru_cache

from shoal.settings import Settings

from . import _migrate
from ._hostslots import HostGrant, HostLeases
from ._migrate import HEAD as SCHEMA_HEAD
from ._migrate import StoreOutdated, Upgraded
from ._repo import Counters, Store, aware, hash_key, new_id
from ._schedules import RunStart
from ._tables import (
    AccountRow,
    ApiKeyRow,
    ChunkRow,
    HostSlotRow,
    IdempotencyRow,
    JobRow,
    ScheduleRow,
    UploadRow,
    WebhookDeliveryRow,
    WebhookEventRow,
    utcnow,
)


@lru_cache
def _store(url: str) -> Store:
    return Store(url)


def get_store(settings: Settings) -> Store:
    """The store for these settings (one per database URL and process)."""
    return _store(settings.db_url)


def upgrade_store(settings: Settings) -> Upgraded:
    """Create the store, or bring it to this code's schema, under the migration lock."""
    return _migrate.upgrade(settings.db_url)


def store_revision(settings: Settings) -> str | None:
    """The store's schema revision (None: no store yet, or one made before migrations)."""
    return _migrate.current(settings.db_url)


@lru_cache
def _host_leases(url: str) -> HostLeases:
    return HostLeases(url)


def get_host_leases(settings: Settings) -> HostLeases | None:
    """The host-slot leases of the job store, or None when ``SHOAL_HOST_LEASE_S`` is 0 (the
    per-host cap then holds per job only)."""
    return _host_leases(settings.db_url) if settings.host_lease_s > 0 else None


__all__ = [
    "AccountRow",
    "ApiKeyRow",
    "ChunkRow",
    "Counters",
    "HostGrant",
    "HostLeases",
    "HostSlotRow",
    "IdempotencyRow",
    "JobRow",
    "RunStart",
    "ScheduleRow",
    "SCHEMA_HEAD",
    "Store",
    "StoreOutdated",
    "UploadRow",
    "Upgraded",
    "WebhookDeliveryRow",
    "WebhookEventRow",
    "aware",
    "get_host_leases",
    "get_store",
    "hash_key",
    "new_id",
    "store_revision",
    "upgrade_store",
    "utcnow",
]
