"""What the ``shoal jobs`` and ``shoal schedules`` commands share: the connection options, the
error exit, JSON and table output.

A command reads ``--url``/``SHOAL_URL`` and ``--api-key``/``SHOAL_API_KEY``; with no key given,
the key ``shoal up`` keeps in its data folder (``SHOAL_DATA_DIR``, default ``./.shoal``) is
used, so the commands work beside a local stack without any setup. An error answer is printed
on stderr (title, detail and each invalid field) and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from shoal.client._client import Client
from shoal.client._errors import ShoalError

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="SHOAL_URL", help="The API (default http://127.0.0.1:8000)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="SHOAL_API_KEY",
        help="API key (default: the local key of `shoal up` in SHOAL_DATA_DIR or ./.shoal).",
        show_envvar=True,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]

#: a pipe gets whole lines (rich would cut a table to 80 columns, ids included)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 120
)


def local_key() -> str | None:
    """The key ``shoal up`` wrote to its data folder, if there is one to read."""
    folder = Path(os.environ.get("SHOAL_DATA_DIR") or ".shoal")
    with contextlib.suppress(OSError):
        return (folder / "local-api-key").read_text().strip() or None
    return None


@contextlib.contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client for one command; any ``ShoalError`` inside is printed and exits 1."""
    with reporting(), Client(url, api_key or local_key()) as client:
        yield client


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    try:
        yield
    except ShoalError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def dump(value: Any) -> Any:
    """``value`` as plain JSON data (models through their JSON mode)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(dump(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def report(value: Any, line: str, as_json: bool) -> None:
    """What a command answers: ``value`` as JSON with ``--json``, else ``line`` for people."""
    if as_json:
        print_json(value)
    else:
        out.print(line)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(box=None, header_style="bold", pad_edge=False)
    for i, name in enumerate(columns):
        t.add_column(name, no_wrap=i == 0)  # the id: whole, or it cannot be pasted
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    _emit(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """One ``name  value`` line each (a single object, human-readable)."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for name, value in pairs:
        t.add_row(name, cell(value))
    _emit(t)


def _emit(t: Table) -> None:
    """Print ``t`` without the spaces rich pads its last column with."""
    with out.capture() as captured:
        out.print(t)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def cell(value: Any) -> Text:
    """``value`` as a table cell: plain text (a ``[`` in a URL is not rich markup)."""
    if value is None:
        return Text("-")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))
