"""Part files and the job output built from them (NDJSON, CSV, Parquet; split; paged reads)."""

from shoal.output._build import (
    OutputFile,
    build_output,
    column_names,
    flat_schema,
    stream_output,
)
from shoal.output._parts import (
    PART_COLUMNS,
    PART_SCHEMA,
    count_rows,
    iter_part_batches,
    part_row_counts,
    part_url,
    part_urls,
    read_results,
    write_part,
)

__all__ = [
    "PART_COLUMNS",
    "PART_SCHEMA",
    "OutputFile",
    "build_output",
    "column_names",
    "count_rows",
    "flat_schema",
    "iter_part_batches",
    "part_row_counts",
    "part_url",
    "part_urls",
    "read_results",
    "stream_output",
    "write_part",
]
