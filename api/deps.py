"""FastAPI dependencies as typed aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.ingress import AUTH_SCOPE_KEY
from shoal.contract import is_id
from shoal.errors import AuthError, NotFound
from shoal.settings import Settings, get_settings
from shoal.storage import Storage, get_storage
from shoal.store import AccountRow, JobRow, Store, UploadRow, get_store

SettingsDep = Annotated[Settings, Depends(get_settings)]


def _store(settings: SettingsDep) -> Store:
    return get_store(settings)


def _storage(settings: SettingsDep) -> Storage:
    return get_storage(settings)


StoreDep = Annotated[Store, Depends(_store)]
StorageDep = Annotated[Storage, Depends(_storage)]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


def _current_account(
    request: Request,
    store: StoreDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccountRow:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise AuthError("missing API key: send `Authorization: Bearer <api key>`")
    found = request.scope.get(AUTH_SCOPE_KEY)  # api.ingress looked the key up already
    if found is not None and found[0] == creds.credentials:
        account = found[1]
    else:
        account = store.account_for_key(creds.credentials)
    if account is None:
        raise AuthError("unknown API key")
    return account


CurrentAccount = Annotated[AccountRow, Depends(_current_account)]


def own_job(store: Store, job_id: str, account_id: str) -> JobRow:
    """The account's job; ``NotFound`` for an unknown id and for another account's job alike.
    A value no id has is unknown without a query (PostgreSQL refuses text holding NUL: it was a
    500)."""
    row = store.get_job(job_id, account_id) if is_id(job_id) else None
    if row is None:
        raise NotFound(f"no job {job_id}" if is_id(job_id) else "no job of that id")
    return row


def own_upload(store: Store, upload_id: str, account_id: str) -> UploadRow:
    """The account's upload, as ``own_job`` finds a job."""
    row = store.get_upload(upload_id, account_id) if is_id(upload_id) else None
    if row is None:
        raise NotFound(f"no upload {upload_id}" if is_id(upload_id) else "no upload of that id")
    return row
