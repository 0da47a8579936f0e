"""TEMPORARY: ``shoal.chunking`` under its old name, removed in the next commit (once
``shoal/scrape.py`` and ``shoal/chunkprocs.py`` import ``shoal.chunking``)."""

from shoal.chunking import Chunk, chunk_size, plan_chunks, read_chunk

__all__ = ["Chunk", "chunk_size", "plan_chunks", "read_chunk"]
