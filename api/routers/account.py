"""``/v1/account``: the caller's account, plan limits and webhook secret."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CurrentAccount, SettingsDep, StoreDep
from shoal.account_plans import plan_for
from shoal.settings import Settings
from shoal.store import AccountRow

router = APIRouter(prefix="/v1/account", tags=["account"])


class AccountPublic(BaseModel):
    id: str
    name: str
    plan: dict[str, Any] = Field(
        description="Limits: max_urls_per_job, max_concurrent_jobs, concurrency_cap, "
        "retention_days (the operator's defaults unless set for this account)."
    )
    webhook_secret: str


def _public(a: AccountRow, settings: Settings) -> AccountPublic:
    return AccountPublic(
        id=a.id,
        name=a.name,
        plan=plan_for(a.plan, settings).as_dict(),
        webhook_secret=a.webhook_secret,
    )


@router.get("", response_model=AccountPublic, summary="The caller's account")
def get_account(account: CurrentAccount, settings: SettingsDep) -> AccountPublic:
    return _public(account, settings)


@router.post(
    "/webhook-secret/rotate", response_model=AccountPublic, summary="Issue a new webhook secret"
)
def rotate_secret(account: CurrentAccount, store: StoreDep, settings: SettingsDep) -> AccountPublic:
    secret = "whsec_" + secrets.token_urlsafe(24)
    store.set_webhook_secret(account.id, secret)
    account.webhook_secret = secret
    return _public(account, settings)
