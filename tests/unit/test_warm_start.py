"""``deployments/warm_start.py``: what the forkserver preloads must not start a thread (a fork of
a process with threads may inherit a held lock), and must import."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import importlib, threading
from deployments.warm_start import PRELOAD
for name in PRELOAD:
    importlib.import_module(name)
print(threading.active_count(), sorted(t.name for t in threading.enumerate()))
"""


def test_preloading_starts_no_thread() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert out == "1 ['MainThread']"
