"""Change reports: what changed in a job's rows since an earlier job (a schedule's last run).

``report_changes`` compares a job's part files with an earlier job's (``_compare`` says the
rules), writes the changes file beside the job's output and each row's ``change`` beside its
parts; ``RowLabels`` reads those back for the output builder and the results pages.
"""

from shoal.changes._compare import (
    CHANGE_KINDS,
    ROW_CHANGE,
    ROW_CHANGES,
    Comparison,
    compare,
)
from shoal.changes._job import (
    ChangeReport,
    RowLabels,
    changes_file,
    changes_name,
    compared_fields,
    labels_url,
    report_changes,
    write_labels,
)
from shoal.changes._scan import field_columns, local_files, scan_rows

__all__ = [
    "CHANGE_KINDS",
    "ROW_CHANGE",
    "ROW_CHANGES",
    "ChangeReport",
    "Comparison",
    "RowLabels",
    "changes_file",
    "changes_name",
    "compare",
    "compared_fields",
    "field_columns",
    "labels_url",
    "local_files",
    "report_changes",
    "scan_rows",
    "write_labels",
]
