"""A `fleet` process runs with the collector tuned for thousands of live connections
(why: bench/README.md, "10,000 devices"); commands run in-process (CliRunner) leave it alone."""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from raw_mqtt import raw_connect

from broker.server import free_port
from cli.main import cli, main
from cli.runtime import GC_THRESHOLDS, NOFILE_CAP
from support import end_process, port_open, wait_for

DEFAULTS = (700, 10, 10)


@pytest.fixture
def default_collector():  # type: ignore[no-untyped-def]
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(*DEFAULTS)
    yield
    gc.unfreeze()  # leave the collector as this test process had it
    gc.set_threshold(*before)


def test_the_fleet_program_freezes_start_up_objects_and_collects_young_ones_less_often(default_collector) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as done:
        main(["--help"])  # the console script's entry point, as `fleet --help` runs it
    assert done.value.code == 0
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 10_000  # the imported modules' objects at least


def test_a_command_run_in_process_leaves_the_collector_alone(default_collector) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    assert gc.get_threshold() == DEFAULTS and gc.get_freeze_count() == 0


LOW_SOFT = 128


def _hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 4 * LOW_SOFT:
        pytest.skip(f"the hard open-files limit here is {hard}: nothing to lift")
    return hard


def _low_soft_limit() -> None:  # in the child, before it runs `fleet`: as systemd starts programs
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.fixture
def low_nofile():  # type: ignore[no-untyped-def]
    hard = _hard_limit()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_fleet_program_lifts_its_open_files_limit(low_nofile) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(low_nofile, NOFILE_CAP)


def test_fleet_broker_started_with_a_soft_limit_of_128_takes_300_devices(tmp_path: Path) -> None:
    """As systemd starts it (a low soft limit under a high hard one): every device gets its CONNACK."""
    _hard_limit()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "--db", str(tmp_path / "f.db"),
                             "broker", "--port", str(port), "--allow-anonymous"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_low_soft_limit)
    socks = []
    try:
        assert wait_for(lambda: port_open(port), timeout=30), "broker not up"
        for i in range(300):
            sock, rc = raw_connect(port, f"nofile-{i}", timeout=15)
            socks.append(sock)
            assert rc == 0, f"device {i} refused: {rc}"
    finally:
        for sock in socks:
            sock.close()
        end_process(proc, 15)
