"""The job store: accounts, hashed API keys, jobs, their live chunk counters and the
idempotency keys of job creation, and the webhook outbox.

SQLAlchemy 2; SQLite (WAL) by default, PostgreSQL by ``SHOAL_DATABASE_URL``.
"""

from functools import lru_cache

from shoal.settings import Settings

from ._repo import Counters, Store, aware, hash_key, new_id
from ._tables import (
    AccountRow,
    ApiKeyRow,
    ChunkRow,
    IdempotencyRow,
    JobRow,
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


__all__ = [
    "AccountRow",
    "ApiKeyRow",
    "ChunkRow",
    "Counters",
    "IdempotencyRow",
    "JobRow",
    "Store",
    "UploadRow",
    "WebhookDeliveryRow",
    "WebhookEventRow",
    "aware",
    "get_store",
    "hash_key",
    "new_id",
    "utcnow",
]
