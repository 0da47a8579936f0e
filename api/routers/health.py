"""``GET /v1/health`` (no auth): ``200`` only when a job posted now would start."""

from fastapi import APIRouter

from api.readiness import Ready
from shoal import __version__
from shoal.contract import Health

router = APIRouter(tags=["health"])


@router.get(
    "/v1/health",
    response_model=Health,
    summary="Readiness: would a job posted now start?",
    description=(
        "`200` when the job store and the scheduler (Prefect) answer and every deployment jobs "
        "start on exists; otherwise `503`, its `detail` naming what is missing. Checked with "
        "a 2 s timeout; a ready answer is kept for 2 s."
    ),
    responses={503: {"description": "Not ready: `detail` names what is missing"}},
)
async def health(_ready: Ready) -> Health:
    return Health(status="ok", version=__version__)
