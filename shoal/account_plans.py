"""An account's plan: the limits it runs under.

An account row stores only what the operator set for it (``shoal accounts plan``); everything
else comes from the operator's defaults in ``Settings``, so changing a default reaches every
account that was not given its own value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shoal.settings import Settings


@dataclass(frozen=True)
class Plan:
    """Limits of one account. ``concurrency_cap`` never exceeds ``SHOAL_MAX_CONCURRENCY`` and
    ``max_urls_per_job`` never exceeds ``SHOAL_MAX_URLS_PER_JOB``."""

    max_urls_per_job: int
    max_concurrent_jobs: int
    concurrency_cap: int
    retention_days: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


PLAN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Plan))


def plan_for(stored: dict[str, Any] | None, settings: Settings) -> Plan:
    """The effective plan of an account whose row holds ``stored``."""
    own = {k: int(v) for k, v in (stored or {}).items() if k in PLAN_FIELDS and v is not None}
    return Plan(
        max_urls_per_job=min(
            own.get("max_urls_per_job", settings.max_urls_per_job), settings.max_urls_per_job
        ),
        max_concurrent_jobs=own.get("max_concurrent_jobs", settings.max_concurrent_jobs),
        concurrency_cap=min(
            own.get("concurrency_cap", settings.max_concurrency), settings.max_concurrency
        ),
        retention_days=own.get("retention_days", settings.retention_days),
    )
