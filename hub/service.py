"""The hub service: one object to start and stop.

    with Hub(HubSettings(db=..., broker="mqtt://127.0.0.1:1883")) as hub:
        ...                      # ingesting; hub.stats, hub.ingest.hooks
    hub.run(stop_event)          # or block until a threading.Event is set
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from broker.registry import Registry, Role
from hub.adoption import Adopter
from hub.alarm_service import AlarmService
from hub.command_service import CommandService
from hub.commands import CommandSettings
from hub.config import HubSettings, hub_password
from hub.device_config_service import ConfigService
from hub.firmware_service import FirmwareService
from hub.heartbeat import Heartbeat
from hub.ingest import BatchHook, Ingest
from hub.watermark_holds import WatermarkHolds
from hub.metrics import HubCollector, serve_metrics
from hub.rollout import RolloutSettings
from hub.rollout_owner import RolloutOwner

log = logging.getLogger("fleet.hub")


class Hub:
    """Ingest telemetry from a broker into the fleet database, with presence and retention."""

    def __init__(self, settings: HubSettings | None = None, command_settings: CommandSettings | None = None,
                 rollout_settings: RolloutSettings | None = None) -> None:
        self.settings = settings or HubSettings()
        self.command_settings = command_settings
        self.rollout_settings = rollout_settings
        self.firmware: FirmwareService | None = None
        self.config: ConfigService | None = None
        self.ingest: Ingest | None = None
        self.commands: CommandService | None = None
        self.alarms: AlarmService | None = None
        self._heartbeat: Heartbeat | None = None
        self._adopter: Adopter | None = None
        self._rollout_owner: RolloutOwner | None = None
        self._metrics_server: Any = None
        self.metrics_port: int | None = None

    def start(self, timeout: float = 10.0) -> Hub:
        """Register the hub's login if asked, connect, subscribe; returns once messages flow."""
        s = self.settings
        password: str | None = None
        if s.username:
            password = hub_password(s)
            if s.register_hub:
                # the embedded broker checks logins against this registry
                Registry(s.db).ensure(s.username, Role.HUB, password)
        # the command side first, and hooked before ingest starts: no presence change or reply
        # committed by ingest can slip past the bridge (a retained birth arrives at once)
        holds = WatermarkHolds()  # granted on the command side, honoured by ingest's watermarks
        self.commands = CommandService(s, password, self.command_settings, holds)
        self.commands.start(timeout)
        self.ingest = Ingest(s, password, holds)
        self.ingest.hooks.append(self.commands.on_batch)
        if s.alarms and not s.worker_group:  # one alarm engine per fleet, like the rollout engine
            commands = self.commands
            self.alarms = AlarmService(s, lambda device_id, name, args: commands.submit(
                device_id, name, args, operator="alarm-rule").id)
            self.alarms.start(timeout)
            self.ingest.hooks.append(self.alarms.on_batch)
        try:
            self.ingest.start(timeout)
        except BaseException:
            if self.alarms is not None:
                self.alarms.stop()
                self.alarms = None
            self.commands.stop()
            self.commands = None
            raise
        ingest = self.ingest
        if not s.worker_group:
            self.firmware = FirmwareService(s, password, self.rollout_settings)
            self.firmware.start(timeout)
            commands = self.commands
            # device configuration (firmware_protocol.md 13): one sender per fleet, like rollouts
            self.config = ConfigService(s, password, lambda device_id, name: commands.submit(device_id, name))
            self.config.start(timeout)
            ingest.hooks.append(self.config.on_batch)  # readings outside a device's declared range are flagged
        self._heartbeat = Heartbeat(str(s.db), s.mqtt_client_id, s.broker, lambda: self.stats | {
            **ingest.gauges(), "store_failing": ingest.store_failing, "worker_group": s.worker_group,
            "drives_rollouts": self.drives_rollouts}, ingest.connected.is_set)
        self._heartbeat.start()
        if s.worker_group:
            self._adopter = Adopter(s, password, self.commands)
            self._adopter.start()
            # one worker of the group drives the rollouts; it bids after its first heartbeat is written
            self._rollout_owner = RolloutOwner(s, password, self.rollout_settings)
            self._rollout_owner.start()
        if s.metrics_port is not None:
            self._serve_metrics(s.metrics_port)
        log.info("hub started db=%s broker=%s client_id=%s", s.db, s.broker, s.mqtt_client_id)
        return self

    def _serve_metrics(self, port: int) -> None:
        assert self.ingest is not None and self.commands is not None and self.commands.bridge is not None
        ingest, bridge = self.ingest, self.commands.bridge

        def stats() -> dict[str, Any]:
            writer = ingest.writer
            states = writer.presence.state_counts() if writer else {}
            config = {f"config_{k}": v for k, v in self.config.counters.items()} if self.config else {}
            return self.stats | ingest.gauges() | config | {"online": states.get("online", 0),
                                                            "sleeping": states.get("sleeping", 0),
                                                            "store_failing": int(bool(ingest.store_failing))}

        def command_states() -> dict[str, int]:
            counts: dict[str, int] = {}
            for rec in list(bridge.active.values()):
                counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
            return counts

        alarms = self.alarms
        collector = HubCollector(stats, ingest.commit_seconds, bridge.latency, command_states,
                                 alarms.snapshot if alarms is not None else None)
        self._metrics_server, _ = serve_metrics(collector, port)
        self.metrics_port = self._metrics_server.server_port
        log.info("metrics http://127.0.0.1:%s/metrics", self.metrics_port)

    def stop(self) -> None:
        """Commit and ack what is in hand, then disconnect."""
        if self._rollout_owner is not None:
            self._rollout_owner.stop()
            self._rollout_owner = None
        if self._adopter is not None:
            self._adopter.stop()
            self._adopter = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self.config is not None:
            self.config.stop()
            self.config = None
        if self.alarms is not None:
            self.alarms.stop()
            self.alarms = None
        if self.firmware is not None:
            self.firmware.stop()
            self.firmware = None
        if self.commands is not None:
            self.commands.stop()
            self.commands = None
        if self.ingest is not None:
            self.ingest.stop()
            log.info("hub stopped stats=%s", self.stats)
            self.ingest = None

    def add_hook(self, hook: BatchHook) -> None:
        """Call ``hook(result)`` on the writer thread after each committed batch."""
        assert self.ingest is not None, "start the hub first"
        self.ingest.hooks.append(hook)

    @property
    def drives_rollouts(self) -> bool:
        """True when this hub runs the rollout engine (in a worker group: while it holds the claim)."""
        if self._rollout_owner is not None:
            return self._rollout_owner.owns
        return self.firmware is not None

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since start: messages, readings, duplicates, gaps, skewed, dead letters per reason."""
        if self.ingest is None or self.ingest.writer is None:
            return {}
        return self.ingest.writer.stats.snapshot()

    def run(self, stop: threading.Event) -> None:
        """Start, serve until ``stop`` is set, then stop."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
