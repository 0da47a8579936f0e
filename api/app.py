"""The FastAPI app factory: ``uvicorn --factory api.app:create_app``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, prefect_access
from api.ingress import Ingress
from api.routers import account, downloads, health, jobs, schedules, uploads, webhooks
from shoal import __version__
from shoal.settings import get_settings

DESCRIPTION = """
Shoal runs bulk scraping jobs of up to 1,000,000 URLs. Each job is one Prefect flow run.
Authenticate with `Authorization: Bearer <api key>` (`shoal keys create --account NAME`).
Every error is RFC 9457 problem details (`application/problem+json`). See `docs/API.md` for
the choices this service made where the contract is silent.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    warm = asyncio.create_task(prefect_access.warm_up(get_settings()))
    try:
        yield
    finally:
        warm.cancel()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="Shoal",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    errors.install(app)
    errors.document(app)
    # rate limit, key before body, body size: before any route reads a byte (api/ingress.py)
    app.add_middleware(Ingress)
    for r in (
        health.router,
        jobs.router,
        schedules.router,
        webhooks.router,
        uploads.router,
        downloads.router,
        account.router,
    ):
        app.include_router(r)
    return app
