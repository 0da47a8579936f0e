"""``/v1/account``: the caller's account, plan limits and webhook secret."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CurrentAccount, StoreDep
from shoal.store import AccountRow

router = APIRouter(prefix="/v1/account", tags=["account"])


class AccountPublic(BaseModel):
    id: str
    name: str
    plan: dict[str, Any]
    webhook_secret: str


def _public(a: AccountRow) -> AccountPublic:
    return AccountPublic(id=a.id, name=a.name, plan=a.plan, webhook_secret=a.webhook_secret)


@router.get("", response_model=AccountPublic, summary="The caller's account")
def get_account(account: CurrentAccount) -> AccountPublic:
    return _public(account)


@router.post(
    "/webhook-secret/rotate", response_model=AccountPublic, summary="Issue a new webhook secret"
)
def rotate_secret(account: CurrentAccount, store: StoreDep) -> AccountPublic:
    secret = "whsec_" + secrets.token_urlsafe(24)
    store.set_webhook_secret(account.id, secret)
    account.webhook_secret = secret
    return _public(account)
