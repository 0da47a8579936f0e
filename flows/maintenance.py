"""The ``maintenance`` flow: retention on a schedule (``SHOAL_MAINTENANCE_INTERVAL_S``).

Served by the embedded worker as ``maintenance/scheduled``; each run leaves a summary artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from tasks import remove_expired_results


@flow(name="maintenance", log_prints=True)
async def maintenance() -> dict[str, Any]:
    """Remove expired results (see ``shoal.retention``) and report what went."""
    report = await remove_expired_results()
    removed = report["jobs_removed"]
    await acreate_markdown_artifact(
        key="shoal-maintenance",
        markdown=(
            "# Shoal maintenance\n\n| | |\n|---|---|\n"
            f"| jobs whose files were removed | {len(removed)} |\n"
            f"| uploads removed | {len(report['uploads_removed'])} |\n"
            f"| idempotency keys purged | {report['idempotency_keys_purged']} |\n"
            f"| chunk counters pruned | {report['chunk_counters_pruned']} |\n"
            f"| jobs that could not be cleaned (retried next run) | {len(report['failures'])} |\n"
            + (f"\nRemoved: {', '.join(removed[:50])}{' …' if len(removed) > 50 else ''}\n")
        ),
        description="What the last retention pass removed",
    )
    return report
