"""Accuracy of ``number`` on price-parser's published real-world price strings, per set.

    .venv/bin/python bench/extract_prices.py [--baseline 23f78b4]

The sets are vendored in tests/fixtures/price_parser_examples.py (examples with a
decimal-separator hint left out: Shoal has none to pass). Each string goes through Shoal's
extraction path (``extract_data`` with a selector on a page holding the text, its currency
hint as ``product:price:currency``), through the baseline commit's ``parse_number``, and
through price-parser itself; prints the share each reads right. The regression test with the
same rule is tests/unit/test_extract_prices.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from extract_values import load_baseline  # noqa: E402
from price_parser import Price  # noqa: E402
from test_extract_prices import SETS, _cases, _right, _shoal  # noqa: E402


def _old(old: ModuleType, example: Any) -> float | None:
    return old._values.parse_number(example.price_raw or "")


def _theirs(example: Any) -> float | None:
    return Price.fromstring(example.price_raw, example.currency_raw).amount_float


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="23f78b4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = load_baseline(args.baseline, Path(tmp))
        print(f"| example set | n | Shoal {args.baseline} | Shoal now | price-parser |")
        print("|---|---|---|---|---|")
        totals = [0, 0, 0, 0]
        for name in SETS:
            cases = _cases(name)
            right = [
                sum(_right(_old(old, e), e.amount_float) for e in cases),
                sum(_right(_shoal(e), e.amount_float) for e in cases),
                sum(_right(_theirs(e), e.amount_float) for e in cases),
            ]
            totals[0] += len(cases)
            for k in range(3):
                totals[k + 1] += right[k]
            shares = " | ".join(f"{r / len(cases):.3f}" for r in right)
            print(f"| {name} | {len(cases)} | {shares} |")
        shares = " | ".join(f"{r / totals[0]:.3f}" for r in totals[1:])
        print(f"| all, XFAIL sets included | {totals[0]} | {shares} |")


if __name__ == "__main__":
    main()
