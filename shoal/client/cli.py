"""The ``shoal jobs`` and ``shoal schedules`` command groups (``shoal/cli.py`` mounts them)."""

from shoal.client._cli_jobs import jobs_app
from shoal.client._cli_schedules import schedules_app

__all__ = ["jobs_app", "schedules_app"]
