"""Fixtures of the reliability tests: hubs in-process or as ``fleet hub`` subprocesses, cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgserver import BACKENDS, backend_db_path
from reliability_harness import HubSubprocess


@pytest.fixture
def hub_subprocess(db_path: Path) -> Iterator[Callable[..., HubSubprocess]]:
    """Make ``fleet hub`` subprocesses against a broker port; all stopped after the test."""
    procs: list[HubSubprocess] = []

    def make(port: int, *extra: str) -> HubSubprocess:
        hp = HubSubprocess(db_path, port, *extra)
        procs.append(hp)
        return hp

    yield make
    for hp in procs:
        hp.stop()


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """This suite runs against a SQLite file and a private PostgreSQL server."""
    return backend_db_path(request, tmp_path)
