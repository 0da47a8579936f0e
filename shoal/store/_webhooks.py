"""Reads and writes of the webhook outbox: events to deliver and the log of every attempt.

Events are inserted by ``Store.finish`` in the transaction that ends their job. A dispatcher
claims a due event with a conditional update (``state = 'pending' and next_attempt_at <= now``)
that moves ``next_attempt_at`` to the end of a lease: of two dispatchers racing for one event,
exactly one update matches, and an attempt whose worker died is due again when its lease ends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select, update

from ._db import session_scope
from ._tables import WebhookDeliveryRow, WebhookEventRow, utcnow


def _due(now: datetime) -> Select[tuple[str]]:
    """Pending events whose next attempt is due, the longest waiting first."""
    return (
        select(WebhookEventRow.id)
        .where(WebhookEventRow.state == "pending", WebhookEventRow.next_attempt_at <= now)
        .order_by(WebhookEventRow.next_attempt_at)
    )


class WebhookRecords:
    """The webhook part of ``Store`` (a mixin: ``self.url`` is the store's database URL)."""

    url: str

    def get_webhook_event(self, event_id: str) -> WebhookEventRow | None:
        with session_scope(self.url) as s:
            return s.get(WebhookEventRow, event_id)

    def claim_webhook_events(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[WebhookEventRow]:
        """Take up to ``limit`` due events for one attempt each (their next attempt moves to
        ``lease_until``), in one transaction: the update re-checks that each is still due, so
        an event another dispatcher took meanwhile is not taken twice."""
        with session_scope(self.url) as s:
            ids = list(s.scalars(_due(now).limit(limit)).all())
            if not ids:
                return []
            taken = s.scalars(
                update(WebhookEventRow)
                .where(
                    WebhookEventRow.id.in_(ids),
                    WebhookEventRow.state == "pending",
                    WebhookEventRow.next_attempt_at <= now,
                )
                .values(next_attempt_at=lease_until, updated_at=now)
                .returning(WebhookEventRow),
                execution_options={"synchronize_session": False},
            ).all()
            order = {event_id: n for n, event_id in enumerate(ids)}
            return sorted(taken, key=lambda e: order[e.id])

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
