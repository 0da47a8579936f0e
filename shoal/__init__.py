"""Shoal's core library: plain Python, imports neither Prefect nor FastAPI."""

__version__ = "0.1.0"
