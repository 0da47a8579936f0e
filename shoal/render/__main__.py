"""``python -m shoal.render``: can this host render? Exit 0 naming the browser, else 1 naming
the missing piece (the Makefile's ``setup`` and ``test`` ask this)."""

from __future__ import annotations

import sys

from shoal.errors import RenderUnavailable
from shoal.render import find_browser
from shoal.settings import Settings

try:
    print(f"rendering: {find_browser(Settings())}")
except RenderUnavailable as exc:
    print(f"rendering not available: {exc.detail}", file=sys.stderr)
    sys.exit(1)
