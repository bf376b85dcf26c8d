"""Fixtures that start real components on free ports and clean up after themselves."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.registry import Registry
from broker.server import free_port
from support import MosquittoProcess, start_mosquitto


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "fleet.db"


@pytest.fixture
def registry(db_path: Path) -> Registry:
    return Registry(db_path)


@pytest.fixture
def embedded_broker(db_path: Path, registry: Registry) -> Iterator[BackgroundBroker]:
    """A real embedded broker on a free port, guarded by the registry in ``db_path``."""
    with BackgroundBroker(BrokerSettings(port=free_port(), db=db_path)) as broker:
        yield broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    m = start_mosquitto(tmp_path)
    yield m
    m.proc.terminate()
    try:
        m.proc.wait(5)
    except subprocess.TimeoutExpired:
        m.proc.kill()
