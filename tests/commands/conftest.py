"""The command suite runs against both storage backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from pgserver import BACKENDS, backend_db_path


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """This suite runs against a SQLite file and a private PostgreSQL server."""
    return backend_db_path(request, tmp_path)
