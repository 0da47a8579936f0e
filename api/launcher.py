"""Starting a job's flow run. The API never imports flow code: it starts the ``scrape-job``
deployment by name and stores the flow run id."""

from __future__ import annotations

from prefect.deployments import run_deployment

from shoal.settings import Settings
from shoal.store import JobRow


async def start_flow_run(job: JobRow, settings: Settings) -> str:
    """Create the job's flow run (named after the job, tagged with account and priority)."""
    flow_run = await run_deployment(
        name=f"{settings.deployment_prefix}/{job.priority}",
        parameters={"job_id": job.id},
        timeout=0,
        flow_run_name=job.id,
        tags=[f"account:{job.account_id}", f"priority:{job.priority}", "shoal"],
    )
    return str(flow_run.id)
