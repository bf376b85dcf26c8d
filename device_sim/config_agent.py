"""A simulated device's configuration and self-description (firmware_protocol.md section 13).

Each :class:`~device_sim.device.SimDevice` has one :class:`ConfigAgent`. Like a real device it keeps in
"flash" (this object outlives reboots) the configuration version it applied, the values in force and
the hash of the description it has published; the description itself is a constant made once per
device (its bytes, in the device's encoding, and their hash).

Config keys of a simulated device:

============  ===================  ================================================================
``deadband``  ``float 0..1000``    report-by-exception threshold (0: every sample)
``batch``     ``int 1..64``        samples per telemetry message
``mode``      ``text``             ``eco``, ``normal`` or ``boost``; anything else is refused with a reason
============  ===================  ================================================================
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from device_sim.mqtt import MqttError
from protocol import METRICS, MessageClass, decode, encode, topic_for
from protocol.config import ConfigReport, ConfigSet, Description, check_value, description_hash

if TYPE_CHECKING:
    from device_sim.device import SimDevice

log = logging.getLogger("fleet.sim.config")

MODES = ("eco", "normal", "boost")
CONFIG_TYPES = {"deadband": "float 0..1000", "batch": "int 1..64", "mode": "text"}
DECLARED_RANGES = {"temperature": (-40.0, 85.0)}
"""A simulated sensor's own range where it is narrower than the metric table's."""
COMMANDS: dict[str, dict[str, str]] = {
    "set_interval": {"seconds": "float 0.01..86400"}, "ping": {}, "reboot": {}, "rebirth": {}, "describe": {},
}


@lru_cache(maxsize=64)
def described(metrics: tuple[str, ...], encoding: str) -> tuple[Description, bytes, str]:
    """(description, its payload in ``encoding``, its hash): one per kind of device, made once (a firmware constant)."""
    description = describe(metrics)
    payload = encode(description, encoding)
    return description, payload, description_hash(payload)


def describe(metrics: tuple[str, ...]) -> Description:
    """The description of a simulated device that reports ``metrics``."""
    table = {m.name: m for m in METRICS}
    specs = {}
    for name in metrics:
        low, high = DECLARED_RANGES.get(name, (table[name].low, table[name].high))
        specs[name] = f"{table[name].unit.replace(' ', '_') or '-'} {low:g}..{high:g}"
    return Description(metrics=specs, commands=COMMANDS,
                       config=[x for k, t in CONFIG_TYPES.items() for x in (k, t)])


class ConfigAgent:
    """One device's configuration: applies ConfigSets (newest version wins), reports, publishes its description."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.topic_k = topic_for(device.device_id, MessageClass.CONFIG_SET)
        self.topic_n = topic_for(device.device_id, MessageClass.CONFIG_REPORT)
        self.topic_x = topic_for(device.device_id, MessageClass.DESCRIPTION)
        self.description, self.description_payload, self.desc_hash = described(tuple(device.signal.metrics),
                                                                              device.encoding)
        # "flash"
        self.version = 0
        """The configuration version applied last (the birth's ``cfg``)."""
        self.values: dict[str, Any] = {"mode": "normal"}
        self.published = ""
        """Hash of the description last published (retained): published again only when it changes."""
        self.applied = 0
        self.refused = 0
        self.ignored = 0

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topic_k, 1)]

    def on_online(self) -> None:
        """Before the birth: publish the description (retained) once per description (section 13.4)."""
        if self.published != self.desc_hash:
            self.publish_description()

    def publish_description(self) -> None:
        """Publish the description, retained at QoS 1 (also the answer to a ``describe`` command)."""
        client = self.device.client
        if client is not None:
            client.publish(self.topic_x, self.description_payload, qos=1, retain=True)
            self.published = self.desc_hash

    def on_message(self, payload: bytes) -> None:
        """A ConfigSet: apply it unless an older version than the one in force, then report (ProtocolError for a
        bad payload). The same version again is applied again: values are absolute, so nothing changes, and the
        report the hub may have missed goes out once more."""
        message = decode(MessageClass.CONFIG_SET, payload)
        assert isinstance(message, ConfigSet)
        if message.version < self.version:  # older than what is in force: the newer version won (13.3)
            self.ignored += 1
            self._report(ConfigReport(version=self.version))
            return
        names = self.description.config_keys()
        applied: list[Any] = []
        refused: list[Any] = []
        for key, value in message.pairs():
            name = names[key] if isinstance(key, int) and 0 <= key < len(names) else key
            why = self._refusal(name, value) if isinstance(name, str) else f"no config key with index {key}"
            if why:
                refused += [key, why]
                continue
            self._apply(str(name), value)
            applied += [key, value]
        self.version = message.version
        self.applied += len(applied) // 2
        self.refused += len(refused) // 2
        log.info("config applied device_id=%s version=%s applied=%d refused=%d", self.device.device_id,
                 message.version, len(applied) // 2, len(refused) // 2)
        self._report(ConfigReport(version=message.version, applied=applied, refused=refused))

    def _refusal(self, name: str, value: Any) -> str | None:
        spec = CONFIG_TYPES.get(name)
        if spec is None:
            return f"unknown key {name!r}"
        why = check_value(spec, value)
        if why:
            return why
        if name == "mode" and value not in MODES:
            return f"mode {value!r} is not one of {', '.join(MODES)}"
        return None

    def _apply(self, name: str, value: Any) -> None:
        self.values[name] = value
        if name == "deadband":
            self.device.deadband = float(value)
        elif name == "batch":
            self.device.batch = int(value)

    def _report(self, report: ConfigReport) -> None:
        client = self.device.client
        if client is None:
            return
        try:
            client.publish(self.topic_n, encode(report, self.device.encoding), qos=1)
        except MqttError:
            pass  # the link dropped: the hub sends what is still pending after the next birth
