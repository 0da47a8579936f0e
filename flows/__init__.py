"""Prefect flows: ``scrape-job`` (one flow run per job) and ``maintenance`` (retention)."""
