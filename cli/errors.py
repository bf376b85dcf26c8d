"""How the CLI fails: every condition it can name becomes ONE line on stderr, a hint, and an exit code.

The library raises named errors (:class:`protocol.errors.FleetError` and its tree, ``sqlite3``
errors from a file that is not a database, ``OSError`` from a read-only folder or a port in use).
:func:`to_cli_error` turns each into a :class:`CliError` whose exit code says which kind of
problem it was, so scripts can tell "fix your flags" from "start the hub". Anything else is a
bug and keeps its traceback.

Exit codes (also in the README, "Exit codes"):

    0  success                      7  device offline: command queued until its expiry (fleet send)
    1  unhealthy (fleet status),    8  not found: unknown device, command id, ambiguous id prefix
       or another refused request   9  database unusable: not a database, missing, cannot open, read-only
    2  bad usage or flag value      10 broker: unreachable, bad URL, login refused
    3  command failed               11 hub did not answer (the message says what state the request is in)
    4  command rejected             12 cannot listen: port in use or not allowed
    5  command expired
    6  command timed out
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from enum import IntEnum
from pathlib import Path

import click

from protocol.errors import FleetError


class ExitCode(IntEnum):
    """The ``fleet`` exit codes; one per kind of outcome."""

    OK = 0
    ERROR = 1
    USAGE = 2
    FAILED = 3
    REJECTED = 4
    EXPIRED = 5
    TIMED_OUT = 6
    QUEUED_OFFLINE = 7
    NOT_FOUND = 8
    DATABASE = 9
    BROKER = 10
    HUB = 11
    CANNOT_LISTEN = 12


class CliError(click.ClickException):
    """One line for the operator: what failed, then what to do (``hint``), with a meaningful exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR, hint: str = "") -> None:
        super().__init__(f"{message}; {hint}" if hint else message)
        self.exit_code = int(code)

    def one_line(self) -> str:
        """The message as a single line (newlines from a library message folded)."""
        return "Error: " + " ".join(self.format_message().split())


class NotFound(CliError):
    """An unknown device, command id or similar: an error, never an empty listing."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, ExitCode.NOT_FOUND, hint)


def _db_text(db: Path | None) -> str:
    return str(db) if db is not None else "the database"


def from_sqlite(exc: sqlite3.Error, db: Path | None) -> CliError:
    """A SQLite error on ``db`` as one line saying what is wrong with the file."""
    text = str(exc)
    where = _db_text(db)
    if "file is not a database" in text or isinstance(exc, sqlite3.DatabaseError) and "malformed" in text:
        return CliError(f"{where} is not a fleet database ({text})", ExitCode.DATABASE,
                        "give another file with --db, or move this one away")
    if "unable to open database file" in text:
        folder = db.parent if db is not None else Path(".")
        why = "its folder does not exist" if not folder.exists() else "its folder is not writable or the file not readable"
        return CliError(f"cannot open {where}: {why}", ExitCode.DATABASE, "check the --db path and permissions")
    if "readonly database" in text or "read-only" in text:
        return CliError(f"{where} is read-only ({text})", ExitCode.DATABASE,
                        "run from a writable folder or give a writable --db")
    if "database is locked" in text:
        return CliError(f"{where} is locked by another writer", ExitCode.DATABASE, "try again in a moment")
    return CliError(f"database error on {where}: {text}", ExitCode.DATABASE)


_FILE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC,
                errno.EDQUOT}
_CONNECT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT,
                   errno.ECONNABORTED}


def from_os_error(exc: OSError) -> CliError | None:
    """An ``OSError`` we can name (a file we may not write, a port in use, a refused connection), else None."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return CliError(f"broker host not found ({reason})", ExitCode.BROKER, "check the --broker URL")
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot listen: {reason}", ExitCode.CANNOT_LISTEN,
                        "is another broker running? choose another port with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return CliError(f"cannot listen: {reason}", ExitCode.CANNOT_LISTEN, "check the --host address")
    if exc.errno in _CONNECT_ERRNOS:
        return CliError(f"broker not reachable: {reason}", ExitCode.BROKER, "is the broker running? check --broker")
    if exc.errno in _FILE_ERRNOS:
        target = f" {exc.filename}" if exc.filename else ""
        return CliError(f"cannot use{target}: {reason}", ExitCode.DATABASE,
                        "run from a writable folder or give a writable --db")
    return None


def _fleet_error_code(exc: FleetError) -> ExitCode:
    # imported here: the CLI depends on these packages, never the other way round
    from broker.url import BrokerUrlError
    from hub.ops_client import BrokerUnreachable, NoAnswer
    from hub.storage import StorageError

    for kind, code in ((StorageError, ExitCode.DATABASE), (BrokerUrlError, ExitCode.BROKER),
                       (BrokerUnreachable, ExitCode.BROKER), (NoAnswer, ExitCode.HUB)):
        if isinstance(exc, kind):
            return code
    return ExitCode.ERROR


def to_cli_error(exc: BaseException, db: Path | None = None) -> CliError | None:
    """The :class:`CliError` for an error we can name, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, FleetError):
        return CliError(str(exc), _fleet_error_code(exc))
    if isinstance(exc, sqlite3.Error):
        return from_sqlite(exc, db)
    if isinstance(exc, OSError):
        return from_os_error(exc)
    return None
