"""Fixtures that start real components on free ports and clean up after themselves."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# the hand-built MQTT packets of tests/broker/raw_mqtt.py serve every suite (security, cli): shared, not copied
sys.path.insert(0, str(Path(__file__).resolve().parent / "broker"))

import pytest
import pytest_timeout
from pgserver import PostgresServer, postgres_bin
from support import MosquittoProcess, load_factor, start_mosquitto

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.registry import Registry
from broker.server import free_port
from hub.config import HubSettings
from hub.service import Hub


TIMEOUT_SCALE_CAP = 5.0
"""A test's pytest-timeout grows with the load, up to this factor (120 s -> 10 min): a hang still ends."""


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: pytest_timeout.Settings) -> object:
    """pytest-timeout's per-test limit, scaled like every wait in the tests (support.load_factor)."""
    scale = min(load_factor(), TIMEOUT_SCALE_CAP)
    if scale <= 1.0 or not settings.timeout:
        return None  # pytest-timeout's own hook sets the timer as configured
    return pytest_timeout.pytest_timeout_set_timer(item, settings._replace(timeout=settings.timeout * scale))


@pytest.fixture
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The test's fleet database: a SQLite file; a fresh PostgreSQL database when FLEET_TEST_BACKEND=postgresql
    (the whole suite on PostgreSQL; the ingest, commands, reliability and scale-out suites run on both anyway)."""
    if os.environ.get("FLEET_TEST_BACKEND") == "postgresql":
        request.getfixturevalue("monkeypatch").chdir(tmp_path)  # side files in the test's own folder
        return Path(request.getfixturevalue("postgres_server").new_database())
    return tmp_path / "fleet.db"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for the session (temp folder, free port, socket in the folder)."""
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("FLEET_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin) but FLEET_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL is not installed here (no /usr/lib/postgresql/*/bin/initdb; .ci/run installs it)")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Path:
    """A fresh, empty PostgreSQL database as the ``--db`` value (a URL carried in a Path, as the CLI does)."""
    return Path(postgres_server.new_database())


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


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Run finalizers at a safe point after each test.

    amqtt leaves StreamWriters of cancelled handlers behind; collected at a random later moment,
    their ResourceWarning can land inside an ``ast`` conversion of pytest's and trip CPython
    3.11's "AST constructor recursion depth mismatch" (gh-106905).
    """
    yield
    gc.collect()


@pytest.fixture
def start_hub(db_path: Path) -> Iterator[Callable[..., Hub]]:
    """Start an in-process hub against a broker port (settings overridable); stopped after the test."""
    hubs: list[Hub] = []

    def start(port: int, **kw: object) -> Hub:
        base: dict[str, object] = {"presence_check_s": 0.5, "staleness_min_s": 60.0}
        settings = HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{port}", **(base | kw))  # type: ignore[arg-type]
        hub = Hub(settings).start(timeout=15)
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()
