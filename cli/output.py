"""Output for people and for scripts: a rich table on a terminal, JSON otherwise.

Data goes to stdout, logs and progress to stderr. ``NO_COLOR`` is respected by rich.

Tables fit the terminal (``COLUMNS`` when set) without wrapping a row: each listing names its
columns from the least important up; those give up width first, then are left out (a line
under the table says which; ``--json`` shows everything). Id columns are never cut. Every cell is
device-controlled text as far as this module knows, so it is shown inert (control characters
escaped, :func:`protocol.text.inert`) and never read as rich markup.
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
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from protocol.text import inert

F = TypeVar("F", bound=Callable[..., Any])

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True)


def json_option(fn: F) -> F:
    """Give a listing command ``--json`` (an array) and ``--nl`` (one JSON object per line)."""

    @click.option("--table", "as_table", is_flag=True, help="Print a table even when stdout is not a terminal.")
    @click.option("--nl", "as_nl", is_flag=True, help="Print newline-delimited JSON, one object per line.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (the default when piped).")
    @wraps(fn)
    def wrapper(*args: Any, as_json: bool, as_nl: bool, as_table: bool, **kwargs: Any) -> Any:
        return fn(*args, fmt=output_format(as_json, as_nl, as_table), **kwargs)

    return wrapper  # type: ignore[return-value]


def output_format(as_json: bool = False, as_nl: bool = False, as_table: bool = False) -> str:
    """``nl``, ``json`` or ``table``: the flag given, else a table on a terminal and JSON in a pipe."""
    if as_nl:
        return "nl"
    if as_json:
        return "json"
    return "table" if as_table or sys.stdout.isatty() else "json"


def safe(text: object) -> str:
    """Device-supplied ``text`` ready for ``Console.print`` with markup: control characters and markup escaped."""
    return escape(inert(text))


def fmt_time(ts: float | None) -> str:
    """A Unix time as local ISO text, for tables."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Iterable[str] | None = None, title: str | None = None,
         shrink: Sequence[str] = (), whole: Sequence[str] = ("id", "device_id")) -> None:
    """Print ``rows`` as a table, a JSON array or NDJSON.

    Tables fit the terminal: columns in ``shrink`` (least important first) give up width, then
    are left out; columns in ``whole`` are never cut.
    """
    if fmt == "json":
        click.echo(json.dumps(list(rows), default=str, indent=2))
        return
    if fmt == "nl":
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    cells = [[inert("-" if row.get(c) is None else row.get(c)) for c in cols] for row in rows]
    console = Console(soft_wrap=False)  # per call: COLUMNS is read when the console is made
    widths, hidden = fit_columns(cols, cells, console.width, shrink, whole)
    table = Table(title=title)
    keep = [i for i, c in enumerate(cols) if c not in hidden]
    for i in keep:
        table.add_column(cols[i], width=widths[cols[i]], no_wrap=True, overflow="ellipsis")
    for row_cells in cells:
        table.add_row(*(Text(row_cells[i]) for i in keep))
    console.print(table)
    if hidden:
        console.print(Text(f"--json shows all; not shown at {console.width} columns: {', '.join(hidden)}", style="dim"),
                      no_wrap=True, overflow="ellipsis")


TABLE_OVERHEAD_PER_COLUMN = 3  # one space of padding each side and one border
MIN_WIDTH = 8


def fit_columns(cols: Sequence[str], cells: Sequence[Sequence[str]], width: int, shrink: Sequence[str],
                whole: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Column widths that fit ``width`` terminal columns, and the columns left out (pure; tested alone).

    Natural width is the longest cell or header. Columns in ``shrink`` (least important first)
    are narrowed down to ``MIN_WIDTH``, then dropped, in that order, until the table fits.
    """
    natural = {c: max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)}
    widths = dict(natural)
    order = [c for c in shrink if c in widths and c not in whole]
    shown = list(cols)

    def excess() -> int:
        return sum(widths[c] for c in shown) + TABLE_OVERHEAD_PER_COLUMN * len(shown) + 1 - width

    for c in order:
        if excess() <= 0:
            break
        widths[c] = max(min(natural[c], MIN_WIDTH), widths[c] - excess())
    hidden: list[str] = []
    for c in order:
        if excess() <= 0:
            break
        shown.remove(c)
        hidden.append(c)
    for c in reversed(order):  # room left after dropping: give it back, most important first
        if c in shown and excess() < 0:
            widths[c] = min(natural[c], widths[c] - excess())
    return widths, hidden
