"""``/v1/jobs/{id}/webhooks``: a job's webhook events and every delivery attempt."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentAccount, StoreDep, own_job
from api.routers.jobs import JobId
from shoal.contract import (
    JobSpec,
    WebhookDelivery,
    WebhookEventPublic,
    WebhookLog,
)
from shoal.store import aware

router = APIRouter(prefix="/v1/jobs", tags=["webhooks"])


@router.get(
    "/{job_id}/webhooks",
    response_model=WebhookLog,
    summary="The job's webhook deliveries: every attempt, oldest first",
    responses={404: {"description": "Unknown job, or another account's"}},
)
def get_webhook_log(job_id: JobId, account: CurrentAccount, store: StoreDep) -> WebhookLog:
    """The job's webhook (as normalized at creation), its events (one when the job ended and
    the webhook takes that event type) with their state, and every attempt to deliver them:
    the receiver's status code or why there was none, the duration and the next retry."""
    row = own_job(store, job_id, account.id)
    events, deliveries = store.webhook_log(job_id)
    return WebhookLog(
        job_id=job_id,
        webhook=JobSpec.model_validate(row.spec).webhook,
        events=[
            WebhookEventPublic(
                id=e.id,
                type=e.type,  # type: ignore[arg-type]
                state=e.state,  # type: ignore[arg-type]
                attempts=e.attempts,
                next_attempt_at=aware(e.next_attempt_at) if e.state == "pending" else None,
                created_at=aware(e.created_at),  # type: ignore[arg-type]
            )
            for e in events
        ],
        deliveries=[
            WebhookDelivery(
                id=d.id,
                event_id=d.event_id,
                event_type=d.event_type,  # type: ignore[arg-type]
                attempt=d.attempt,
                url=d.url,
                requested_at=aware(d.requested_at),  # type: ignore[arg-type]
                status_code=d.status_code,
                delivered=bool(d.delivered),
                error=d.error,
                duration_ms=d.duration_ms,
                next_retry_at=aware(d.next_retry_at),
            )
            for d in deliveries
        ],
    )
