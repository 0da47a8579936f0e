"""A typed Python client of Shoal's REST API (``Client``; ``AsyncClient`` for asyncio code),
and the ``shoal jobs`` and ``shoal schedules`` commands built on it (``shoal.client.cli``).

It speaks only HTTP: it imports nothing of the server but the contract's models
(``shoal.contract``), so it works against any Shoal reachable at ``SHOAL_URL``.
"""

from shoal.client._apply import FileError, Plan, apply, plan, read_file
from shoal.client._async import AsyncClient
from shoal.client._client import Client
from shoal.client._errors import FieldProblem, ShoalError
from shoal.client._models import Job, JobPage, Result, Schedule, SchedulePage, SubmittedJob, Upload

__all__ = [
    "AsyncClient",
    "Client",
    "FieldProblem",
    "FileError",
    "Job",
    "JobPage",
    "Plan",
    "Result",
    "Schedule",
    "SchedulePage",
    "ShoalError",
    "SubmittedJob",
    "Upload",
    "apply",
    "plan",
    "read_file",
]
