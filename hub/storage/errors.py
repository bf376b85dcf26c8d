"""The one error of the storage package.

    FleetError                      (protocol/errors.py)
    └── StorageError                the fleet database cannot be opened, created, upgraded or used

Its message is one line that names the file and says what to do next, so the CLI prints it as is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocol.errors import FleetError


class StorageError(FleetError):
    """The fleet database at ``path`` cannot be used as asked; ``hint`` says what to do next."""

    def __init__(self, path: str | Path, problem: str, hint: str = "") -> None:
        super().__init__(f"{problem}: {hint}" if hint else problem)
        self.path = Path(path)
        self.problem = problem
        self.hint = hint


def storage_error(path: str | Path, exc: sqlite3.Error | OSError) -> StorageError:
    """Name what SQLite (or the OS) said about ``path`` in words an operator can act on."""
    text = str(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        return StorageError(path, f"{path} is not a fleet database (SQLite: {text})",
                            "pass --db with the right file, or move this one away")
    if "unable to open" in low or isinstance(exc, OSError):
        return StorageError(path, f"cannot open the fleet database {path} ({text})",
                            "check that the folder exists and is writable")
    if "readonly" in low or "read-only" in low:
        return StorageError(path, f"the fleet database {path} is read-only ({text})",
                            "make the file and its folder writable")
    if "locked" in low or "busy" in low:
        return StorageError(path, f"the fleet database {path} is locked by another process ({text})",
                            "try again, or stop the process that holds it")
    if "disk" in low and "full" in low:
        return StorageError(path, f"the disk of {path} is full ({text})", "free some space")
    return StorageError(path, f"the fleet database {path} cannot be used ({text})")
