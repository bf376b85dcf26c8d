"""`fleet device-check` judges a live device against firmware_protocol.md.

Every test runs the real checker against a real device on a real embedded broker: the
simulator's devices and the independent minimal device must pass, and a device that breaks one
rule must fail on the section of that rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conformance_helpers import FAST, check
from minimal_device import DeviceConfig, Fault, MinimalDevice
from support import MosquittoProcess

from broker.background import BackgroundBroker
from broker.registry import Registry
from cli.main import cli
from device_sim.background import BackgroundFleet
from device_sim.fleet import device_id, provision
from device_sim.settings import Behaviour, SimSettings
from hub.conformance import CheckSettings, Outcome, Report
from hub.service import Hub



@pytest.mark.parametrize("enc", ["json", "cbor"])
def test_the_minimal_device_passes_every_check(minimal_device: Callable[..., MinimalDevice],
                                               checker_settings: Callable[..., CheckSettings], enc: str) -> None:
    minimal_device(enc=enc, interval_s=2)  # short enough for the run to judge its heartbeat
    report = check(checker_settings("mini-1"))
    assert report.passed, [r.check for r in report.results if r.outcome is not Outcome.PASS]
    assert report.exit_code() == 0
    checks = {r.check for r in report.results}
    assert checks >= {"heartbeat", "birth", "encoding", "rebirth", "duplicate-command", "command-expiry", "malformed-command",
                      "description", "configuration", "withheld-watermark", "hole-watermark", "give-up", "session-loss",
                      "payloads", "seq"}


def test_a_device_with_configuration_in_force_answers_an_older_version_with_no_keys(
        minimal_device: Callable[..., MinimalDevice], checker_settings: Callable[..., CheckSettings]) -> None:
    device = minimal_device(enc="cbor", cfg_version=3)
    report = check(checker_settings("mini-1"))
    config = next(r for r in report.results if r.check == "configuration")
    assert config.outcome is Outcome.PASS, config.summary
    assert "answered version 2 with 3 and no keys" in config.summary  # 13.3 rule 1 was tried
    assert device.cfg_version == 3 and device.config_values == {"report_s": 60, "label": ""}  # nothing changed


def test_a_device_without_a_clock_passes_once_the_watermark_gives_it_the_time(
        minimal_device: Callable[..., MinimalDevice], checker_settings: Callable[..., CheckSettings]) -> None:
    minimal_device(has_clock=False)
    report = check(checker_settings("mini-1"))
    assert report.passed
    assert report.outcome_of("command-expiry") is Outcome.PASS  # it learned the time, so it checks expires


BROKEN = [
    (Fault.RUN_DUPLICATES, "duplicate-command", "json"),
    (Fault.IGNORE_TTL, "command-expiry", "json"),
    (Fault.NO_RESEND_AFTER_SESSION_LOSS, "session-loss", "json"),
    (Fault.TIMED_RESEND, "withheld-watermark", "json"),
    (Fault.NO_KEEP, "withheld-watermark", "json"),
    (Fault.IGNORE_REBIRTH, "rebirth", "json"),
    (Fault.RESEND_ALL_ON_HOLE, "hole-watermark", "json"),
    (Fault.NEVER_GIVE_UP, "give-up", "json"),
    (Fault.SILENT, "heartbeat", "json"),
    (Fault.CRASH_ON_MALFORMED, "malformed-command", "json"),
    (Fault.HANG_ON_MALFORMED, "malformed-command", "json"),
    (Fault.WRONG_ENCODING, "encoding", "cbor"),
    (Fault.NO_CONFIG_TOPIC, "configuration", "json"),
    (Fault.APPLY_OLD_CONFIG, "configuration", "cbor"),
    (Fault.ACCEPT_ANY_KEY, "configuration", "json"),
    (Fault.WRONG_DESC_HASH, "description", "cbor"),
]
BROKEN_KW = {Fault.SILENT: {"interval_s": 1, "sample_s": 2.0}, Fault.APPLY_OLD_CONFIG: {"cfg_version": 3}}


@pytest.mark.parametrize(("fault", "expected", "enc"), BROKEN, ids=[f.name.lower() for f, _, _ in BROKEN])
def test_a_device_that_breaks_a_rule_fails_on_that_rule(minimal_device: Callable[..., MinimalDevice],
                                                        checker_settings: Callable[..., CheckSettings],
                                                        fault: Fault, expected: str, enc: str) -> None:
    minimal_device(enc=enc, faults=frozenset({fault}), **BROKEN_KW.get(fault, {}))
    report = check(checker_settings("mini-1", timeout_s=8.0))
    assert report.outcome_of(expected) is Outcome.FAIL
    assert report.exit_code() == 1
    assert report.outcome_of("birth") is Outcome.PASS  # the verdict is about the broken rule, not everything
    if expected == "malformed-command":  # it crashed (and crash-loops on the redelivered command) or hung
        assert report.outcome_of("session-loss") is Outcome.SKIP


def test_a_device_that_stops_answering_commands_ends_the_run_with_the_rest_skipped(
        minimal_device: Callable[..., MinimalDevice], checker_settings: Callable[..., CheckSettings]) -> None:
    """A device that hangs on a malformed command would make every later scenario wait out its timeouts: the
    run ends at the malformed-command check and says why (a crashing one: the parametrized test above)."""
    minimal_device(faults=frozenset({Fault.HANG_ON_MALFORMED}))
    report = check(checker_settings("mini-1", timeout_s=8.0))
    assert report.outcome_of("malformed-command") is Outcome.FAIL
    later = ("withheld-watermark", "hole-watermark", "give-up", "session-loss")
    assert [report.outcome_of(c) for c in later] == [Outcome.SKIP] * len(later)
    skipped = next(r for r in report.results if r.check == "session-loss")
    assert "stopped answering commands after the malformed ones" in skipped.summary


@pytest.mark.parametrize("enc", ["json", "cbor"])
def test_the_simulators_devices_pass_every_check(db_path: Path, embedded_broker: BackgroundBroker,
                                                 checker_settings: Callable[..., CheckSettings], enc: str) -> None:
    settings = SimSettings(devices=1, port=embedded_broker.port, rate=3.0, profile="env", reconnect_delay=0.2,
                           behaviour={"env": Behaviour(encoding=enc)})
    dev = device_id("sim", 1)
    sim = BackgroundFleet(settings, provision(db_path, [dev])).start()
    try:
        report = check(checker_settings(dev))
    finally:
        sim.stop()
    assert report.passed, [r.check for r in report.results if r.outcome is not Outcome.PASS]


def test_with_the_hub_running_every_check_runs_and_passes_without_a_warning(
        embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub], minimal_device: Callable[..., MinimalDevice],
        checker_settings: Callable[..., CheckSettings], caplog: pytest.LogCaptureFixture) -> None:
    hub = start_hub(embedded_broker.port)
    minimal_device(interval_s=2)
    with caplog.at_level(logging.WARNING, logger="fleet.hub"):
        report = check(checker_settings("mini-1", hub_answer_s=5.0))
    assert any("a hub is running: it holds its watermarks" in n for n in report.notes)
    assert any("hold released" in n for n in report.notes)
    assert report.passed, [r.check for r in report.results if r.outcome is not Outcome.PASS]
    assert report.exit_code() == 0 and not any(r.outcome is Outcome.SKIP for r in report.results)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert hub.commands is not None and hub.commands.bridge is not None
    assert hub.commands.bridge.counters["checker_replies"] > 0
    assert hub.commands.bridge.counters["forged_replies"] == 0


def test_with_the_hub_running_the_simulators_device_passes(
        db_path: Path, embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub],
        checker_settings: Callable[..., CheckSettings]) -> None:
    start_hub(embedded_broker.port)
    settings = SimSettings(devices=1, port=embedded_broker.port, rate=3.0, profile="env", reconnect_delay=0.2)
    dev = device_id("sim", 1)
    sim = BackgroundFleet(settings, provision(db_path, [dev])).start()
    try:
        report = check(checker_settings(dev, hub_answer_s=5.0))
    finally:
        sim.stop()
    assert report.passed, [r.check for r in report.results if r.outcome is not Outcome.PASS]
    assert report.exit_code() == 0


HUB_BROKEN = [(Fault.TIMED_RESEND, "withheld-watermark"), (Fault.RESEND_ALL_ON_HOLE, "hole-watermark"),
              (Fault.NEVER_GIVE_UP, "give-up")]


@pytest.mark.parametrize(("fault", "expected"), HUB_BROKEN, ids=[f.name.lower() for f, _ in HUB_BROKEN])
def test_with_the_hub_running_a_broken_device_still_fails_on_its_rule(
        embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub], minimal_device: Callable[..., MinimalDevice],
        checker_settings: Callable[..., CheckSettings], fault: Fault, expected: str) -> None:
    start_hub(embedded_broker.port)
    minimal_device(faults=frozenset({fault}))
    report = check(checker_settings("mini-1", timeout_s=8.0, hub_answer_s=5.0))
    assert report.outcome_of(expected) is Outcome.FAIL
    assert report.exit_code() == 1


def test_the_cli_prints_json_with_evidence_and_exits_0_on_a_passing_device(
        db_path: Path, embedded_broker: BackgroundBroker, registry: Registry,
        minimal_device: Callable[..., MinimalDevice]) -> None:
    minimal_device(enc="cbor")
    result = CliRunner().invoke(cli, ["--db", str(db_path), "device-check", "mini-1", "--broker",
                                      f"mqtt://127.0.0.1:{embedded_broker.port}", "--hold", "2s",
                                      "--hub-answer", "1s", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["device_id"] == "mini-1"
    rebirth = next(r for r in report["results"] if r["check"] == "rebirth")
    assert rebirth["section"] == "6 rebirth" and rebirth["outcome"] == "pass"
    assert any("-> c" in line for line in rebirth["evidence"]) and any("<- r" in line for line in rebirth["evidence"])


def test_the_cli_says_in_one_line_when_the_device_is_not_there(db_path: Path, embedded_broker: BackgroundBroker,
                                                               registry: Registry) -> None:
    registry.add("ghost-1")
    result = CliRunner().invoke(cli, ["--db", str(db_path), "device-check", "ghost-1", "--broker",
                                      f"mqtt://127.0.0.1:{embedded_broker.port}", "--timeout", "2s", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    birth = report["results"][0]
    assert birth["check"] == "birth" and birth["outcome"] == "fail" and "no retained status" in birth["summary"]
    assert all(r["outcome"] == "skip" for r in report["results"][1:] if r["check"] != "payloads")


def test_the_cli_refuses_a_broker_that_is_not_there(db_path: Path) -> None:
    from broker.server import free_port

    result = CliRunner().invoke(cli, ["--db", str(db_path), "device-check", "mini-1", "--broker",
                                      f"mqtt://127.0.0.1:{free_port()}", "--timeout", "2s"])
    assert result.exit_code == 1
    assert "broker not reachable" in result.output and "Traceback" not in result.output


def test_on_mosquitto_the_minimal_device_passes_too(mosquitto: MosquittoProcess) -> None:
    """Mosquitto 2 handles the takeover, retained messages and queued QoS 1 its own way; the verdict holds."""
    device = MinimalDevice(DeviceConfig(host="127.0.0.1", port=mosquitto.port, device_id="mini-m", secret="x",
                                        sample_s=0.3, enc="cbor")).start()
    try:
        report = check(CheckSettings(device_id="mini-m", broker=f"mqtt://127.0.0.1:{mosquitto.port}",
                                     username="device-check", password="x", **FAST))
    finally:
        device.stop()
    assert report.passed, [r.check for r in report.results if r.outcome is not Outcome.PASS]


def _check_sleepy_sim(db_path: Path, port: int, checker_settings: Callable[..., CheckSettings], sleep_s: int,
                      fraction: float) -> Report:
    """Run the checker on one simulated sleepy device that sleeps ``sleep_s x fraction`` between wakes."""
    settings = SimSettings(devices=1, port=port, rate=3.0, profile="env", reconnect_delay=0.2, sleep_s=sleep_s,
                           wake_ticks=3, sleep_fraction=fraction)
    sim = BackgroundFleet(settings, provision(db_path, [device_id("sim", 1)])).start()
    try:
        return check(checker_settings(device_id("sim", 1), timeout_s=10.0))
    finally:
        sim.stop()


def test_a_sleepy_device_that_keeps_its_schedule_passes_the_wake_cycle_and_the_rest_is_skipped(
        db_path: Path, embedded_broker: BackgroundBroker, checker_settings: Callable[..., CheckSettings]) -> None:
    # sleeps 3 s after waiting up to 2 s for a watermark (none comes): silent about 5 s, within its sleep_s of 6
    report = _check_sleepy_sim(db_path, embedded_broker.port, checker_settings, sleep_s=6, fraction=0.5)
    sleep = next(r for r in report.results if r.check == "sleep")
    assert sleep.outcome is Outcome.PASS, sleep.summary
    assert any("<- s" in e.what and "online" in e.what for e in sleep.evidence)  # the wake's birth is the evidence
    assert report.outcome_of("encoding") is Outcome.SKIP and report.outcome_of("session-loss") is Outcome.SKIP
    assert "sleeping turned off" in next(r for r in report.results if r.check == "rebirth").summary
    assert report.exit_code() == 2  # nothing failed, the rest was not run


def test_a_sleepy_device_that_oversleeps_fails_the_wake_cycle(
        db_path: Path, embedded_broker: BackgroundBroker, checker_settings: Callable[..., CheckSettings]) -> None:
    # declares sleep_s 2 but sleeps 5 x that: silent for 10 s or more, beyond the hub's missed-wake window of 7 s
    report = _check_sleepy_sim(db_path, embedded_broker.port, checker_settings, sleep_s=2, fraction=5.0)
    sleep = next(r for r in report.results if r.check == "sleep")
    assert sleep.outcome is Outcome.FAIL
    assert "missed_wake" in sleep.summary
    assert report.exit_code() == 1
