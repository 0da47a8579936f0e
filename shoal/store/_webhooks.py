"""Reads and writes of the webhook outbox: events to deliver and the log of every attempt.

Events are inserted by ``Store.finish`` in the transaction that ends their job. A dispatcher
claims a due event with a conditional update (``state = 'pending' and next_attempt_at <= now``)
that moves ``next_attempt_at`` to the end of a lease: of two dispatchers racing for one event,
exactly one update matches, and an attempt whose worker died is due again when its lease ends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from ._db import session_scope
from ._tables import WebhookDeliveryRow, WebhookEventRow, utcnow


class WebhookRecords:
    """The webhook part of ``Store`` (a mixin: ``self.url`` is the store's database URL)."""

    url: str

    def get_webhook_event(self, event_id: str) -> WebhookEventRow | None:
        with session_scope(self.url) as s:
            return s.get(WebhookEventRow, event_id)

    def due_webhook_events(self, now: datetime, limit: int) -> list[str]:
        """Ids of pending events whose next attempt is due, the longest waiting first."""
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(WebhookEventRow.id)
                    .where(
                        WebhookEventRow.state == "pending",
                        WebhookEventRow.next_attempt_at <= now,
                    )
                    .order_by(WebhookEventRow.next_attempt_at)
                    .limit(limit)
                ).all()
            )

    def claim_webhook_event(
        self, event_id: str, now: datetime, lease_until: datetime
    ) -> WebhookEventRow | None:
        """Take a due event for one attempt (its next attempt moves to ``lease_until``);
        None when it is not due any more (delivered, or another dispatcher took it)."""
        with session_scope(self.url) as s:
            res = s.execute(
                update(WebhookEventRow)
                .where(
                    WebhookEventRow.id == event_id,
                    WebhookEventRow.state == "pending",
                    WebhookEventRow.next_attempt_at <= now,
                )
                .values(next_attempt_at=lease_until, updated_at=now)
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                return None
            return s.get(WebhookEventRow, event_id)

    def record_webhook_attempt(
        self, delivery: WebhookDeliveryRow, *, state: str, next_attempt_at: datetime | None
    ) -> None:
        """Log one attempt and move its event on: ``delivered``, ``gave_up``, or ``pending``
        again from ``next_attempt_at``."""
        assert state in ("pending", "delivered", "gave_up")
        with session_scope(self.url) as s:
            s.add(delivery)
            s.execute(
                update(WebhookEventRow)
                .where(WebhookEventRow.id == delivery.event_id)
                .values(
                    attempts=delivery.attempt,
                    state=state,
                    next_attempt_at=next_attempt_at,
                    updated_at=utcnow(),
                )
            )

    def webhook_log(self, job_id: str) -> tuple[list[WebhookEventRow], list[WebhookDeliveryRow]]:
        """A job's events and every delivery attempt, oldest first."""
        with session_scope(self.url) as s:
            events = s.scalars(
                select(WebhookEventRow)
                .where(WebhookEventRow.job_id == job_id)
                .order_by(WebhookEventRow.created_at, WebhookEventRow.id)
            ).all()
            deliveries = s.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.job_id == job_id)
                .order_by(
                    WebhookDeliveryRow.requested_at,
                    WebhookDeliveryRow.event_id,
                    WebhookDeliveryRow.attempt,
                )
            ).all()
        return list(events), list(deliveries)
