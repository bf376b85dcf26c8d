"""Scale-out tests reuse the command tests' minimal device (tests/commands/command_device.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pgserver import BACKENDS, backend_db_path

_COMMANDS = str(Path(__file__).resolve().parent.parent / "commands")
if _COMMANDS not in sys.path:
    sys.path.append(_COMMANDS)


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """This suite runs against a SQLite file and a private PostgreSQL server."""
    return backend_db_path(request, tmp_path)
