"""Output for people and for scripts: a rich table on a terminal, JSON otherwise.

Data goes to stdout, logs and progress to stderr. ``NO_COLOR`` is respected by rich.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True)


def json_option(fn: F) -> F:
    """Give a listing command ``--json`` (an array) and ``--nl`` (one JSON object per line)."""

    @click.option("--nl", "as_nl", is_flag=True, help="Print newline-delimited JSON, one object per line.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @wraps(fn)
    def wrapper(*args: Any, as_json: bool, as_nl: bool, **kwargs: Any) -> Any:
        fmt = "nl" if as_nl else "json" if as_json else ("table" if sys.stdout.isatty() else "json")
        return fn(*args, fmt=fmt, **kwargs)

    return wrapper  # type: ignore[return-value]


def fmt_time(ts: float | None) -> str:
    """A Unix time as local ISO text, for tables."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Iterable[str] | None = None, title: str | None = None) -> None:
    """Print ``rows`` as a table, a JSON array or NDJSON."""
    if fmt == "json":
        click.echo(json.dumps(list(rows), default=str, indent=2))
        return
    if fmt == "nl":
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    table = Table(title=title)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in cols))
    stdout.print(table)
