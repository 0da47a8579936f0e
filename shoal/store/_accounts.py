"""The operator's side of accounts: list and revoke keys, remove an account with its rows
(``shoal keys``, ``shoal accounts remove``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from shoal.contract import FINAL_STATUSES

from ._db import session_scope
from ._tables import (
    AccountRow,
    ApiKeyRow,
    ChunkRow,
    IdempotencyRow,
    JobRow,
    ScheduleRow,
    UploadRow,
    WebhookDeliveryRow,
    WebhookEventRow,
    utcnow,
)


class AccountAdmin:
    """The account part of ``Store`` (a mixin: ``self.url`` is the store's database URL)."""

    url: str

    def list_keys(self, account_id: str) -> list[ApiKeyRow]:
        """The account's keys, oldest first (rows hold the hash and prefix, never the key)."""
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(ApiKeyRow)
                    .where(ApiKeyRow.account_id == account_id)
                    .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
                ).all()
            )

    def find_keys(self, key_or_prefix: str) -> list[ApiKeyRow]:
        """The keys ``key_or_prefix`` names: a whole key, a key id, or a prefix (which can
        name several)."""
        from ._repo import hash_key  # _repo's Store is made of this mixin

        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(ApiKeyRow)
                    .where(
                        (ApiKeyRow.key_hash == hash_key(key_or_prefix))
                        | (ApiKeyRow.id == key_or_prefix)
                        | (ApiKeyRow.prefix == key_or_prefix)
                    )
                    .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
                ).all()
            )

    def revoke_key(self, key_id: str) -> bool:
        """Delete the key: the API looks every request's key up, so it is refused at once."""
        with session_scope(self.url) as s:
            res = s.execute(delete(ApiKeyRow).where(ApiKeyRow.id == key_id))
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def account_by_name(self, name: str) -> AccountRow | None:
        with session_scope(self.url) as s:
            return s.scalar(select(AccountRow).where(AccountRow.name == name))

    def account_jobs(self, account_id: str) -> list[JobRow]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(JobRow).where(JobRow.account_id == account_id)).all())

    def account_uploads(self, account_id: str) -> list[UploadRow]:
        with session_scope(self.url) as s:
            return list(
                s.scalars(select(UploadRow).where(UploadRow.account_id == account_id)).all()
            )

    def cancel_active_jobs(self, account_id: str) -> list[str]:
        """End the account's queued and running jobs ``cancelled`` (no webhook: the account is
        going); returns their ids."""
        now = utcnow()
        with session_scope(self.url) as s:
            ids = list(
                s.scalars(
                    select(JobRow.id).where(
                        JobRow.account_id == account_id, JobRow.status.in_(("queued", "running"))
                    )
                ).all()
            )
            if ids:
                s.execute(
                    update(JobRow)
                    .where(JobRow.id.in_(ids), JobRow.status.not_in(FINAL_STATUSES))
                    .values(status="cancelled", cancel_requested_at=now, completed_at=now)
                )
        return ids

    def remove_account(self, account_id: str) -> dict[str, int]:
        """Delete the account and every row of it, in one transaction: keys, jobs with their
        chunk counters, idempotency keys and webhook events and deliveries, uploads, schedules,
        and the account row with its webhook secret. Returns rows removed per table. Files are the
        caller's (``shoal accounts remove``)."""
        jobs = select(JobRow.id).where(JobRow.account_id == account_id)
        steps: list[tuple[str, Any]] = [
            (
                "webhook_deliveries",
                delete(WebhookDeliveryRow).where(WebhookDeliveryRow.job_id.in_(jobs)),
            ),
            (
                "webhook_events",
                delete(WebhookEventRow).where(WebhookEventRow.account_id == account_id),
            ),
            ("job_chunks", delete(ChunkRow).where(ChunkRow.job_id.in_(jobs))),
            (
                "idempotency_keys",
                delete(IdempotencyRow).where(IdempotencyRow.account_id == account_id),
            ),
            ("jobs", delete(JobRow).where(JobRow.account_id == account_id)),
            ("uploads", delete(UploadRow).where(UploadRow.account_id == account_id)),
            # their Prefect schedules go at the next reconcile (deployments/prefect_schedules)
            ("schedules", delete(ScheduleRow).where(ScheduleRow.account_id == account_id)),
            ("api_keys", delete(ApiKeyRow).where(ApiKeyRow.account_id == account_id)),
            ("accounts", delete(AccountRow).where(AccountRow.id == account_id)),
        ]
        removed: dict[str, int] = {}
        with session_scope(self.url) as s:
            for table, statement in steps:
                removed[table] = int(s.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
        return removed
