"""``GET /v1/health`` (no auth)."""

from fastapi import APIRouter

from shoal import __version__
from shoal.contract import Health

router = APIRouter(tags=["health"])


@router.get("/v1/health", response_model=Health, summary="Liveness of the API")
def health() -> Health:
    return Health(status="ok", version=__version__)
