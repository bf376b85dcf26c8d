"""A `fleet` process runs with the collector tuned for thousands of live connections
(why: bench/README.md, "10,000 devices"); commands run in-process (CliRunner) leave it alone."""

from __future__ import annotations

import gc

import pytest
from click.testing import CliRunner

from cli.main import cli, main
from cli.runtime import GC_THRESHOLDS

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
