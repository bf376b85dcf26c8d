"""Signal generators for the device profiles, reproducible from a seed.

Each generator is a pure function of its own ``random.Random`` and the simulated time it
is stepped by, never of the wall clock: the same ``(seed, device index)`` and the same
step sizes give the same readings on any machine, at any time of day.

Profiles:

* ``env``   environment sensor: temperature with a daily sinusoid plus noise, humidity
  that moves against it, battery voltage that drains and then recharges.
* ``power`` power meter: power draw with occasional spikes, a cumulative energy counter,
  mains voltage.
* ``gps``   tracker: speed and heading that wander, a position that follows them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

DAY_S = 86_400.0


class Profile(StrEnum):
    ENV = "env"
    POWER = "power"
    GPS = "gps"


def device_rng(seed: int, index: int) -> random.Random:
    """The per-device random stream: a string seed is hashed with SHA-512, stable across runs."""
    return random.Random(f"fleet-sim:{seed}:{index}")


@dataclass(frozen=True)
class AlertRule:
    """Alert once when ``metric`` crosses ``trigger``; again only after it came back past ``rearm``."""

    code: str
    metric: str
    trigger: float
    rearm: float
    severity: str = "warning"

    def trips(self, value: float) -> bool:
        return value > self.trigger if self.trigger > self.rearm else value < self.trigger

    def rearms(self, value: float) -> bool:
        return value < self.rearm if self.trigger > self.rearm else value > self.rearm

    def describe(self) -> str:
        return f"{'above' if self.trigger > self.rearm else 'below'} {self.trigger:g}"


class Signal:
    """A profile's state; :meth:`step` advances simulated time and returns ``(metric, value)`` pairs."""

    profile: Profile
    metrics: tuple[str, ...]

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.t = rng.uniform(0, DAY_S)  # simulated time of day at start, seconds
        self._armed = {r.code: True for r in self.alert_rules}

    def step(self, dt_s: float) -> list[tuple[str, float]]:
        raise NotImplementedError

    alert_rules: tuple[AlertRule, ...] = ()

    def alerts(self, sample: list[tuple[str, float]]) -> list[tuple[str, str, str]]:
        """(code, severity, message) for each rule this sample trips; a rule re-arms past its hysteresis."""
        if not self.alert_rules:
            return []
        values = dict(sample)
        armed = self._armed
        out = []
        for rule in self.alert_rules:
            value = values.get(rule.metric)
            if value is None:
                continue
            if armed[rule.code] and rule.trips(value):
                armed[rule.code] = False
                out.append((rule.code, rule.severity, f"{rule.metric} {value:g} {rule.describe()}"))
            elif not armed[rule.code] and rule.rearms(value):
                armed[rule.code] = True
        return out


class EnvSignal(Signal):
    profile = Profile.ENV
    metrics = ("temperature", "humidity", "battery_v")
    alert_rules = (AlertRule("battery_low", "battery_v", 3.45, 3.6),
                   AlertRule("too_warm", "temperature", 28.0, 26.0, "info"))

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.base_c = rng.uniform(12.0, 24.0)
        self.swing_c = rng.uniform(2.0, 7.0)
        self.base_rh = rng.uniform(35.0, 65.0)
        self.battery = rng.uniform(3.6, 4.2)
        self.charging = False

    def step(self, dt_s: float) -> list[tuple[str, float]]:
        self.t += dt_s
        rng = self.rng
        daily = math.sin(2 * math.pi * (self.t / DAY_S) - math.pi / 2)  # coldest at midnight-ish
        temp = self.base_c + self.swing_c * daily + rng.gauss(0.0, 0.15)
        rh = self.base_rh - 2.0 * (temp - self.base_c) + rng.gauss(0.0, 0.8)
        # drains ~0.1 mV per second of simulated time, recharges 1 mV/s from 3.3 V up to 4.2 V
        if self.charging:
            self.battery += 0.001 * dt_s
            if self.battery >= 4.2:
                self.battery, self.charging = 4.2, False
        else:
            self.battery -= 0.0001 * dt_s * rng.uniform(0.5, 1.5)
            if self.battery <= 3.3:
                self.charging = True
        return [
            ("temperature", round(min(max(temp, -60.0), 150.0), 2)),
            ("humidity", round(min(max(rh, 0.0), 100.0), 1)),
            ("battery_v", round(self.battery, 3)),
        ]


class PowerSignal(Signal):
    profile = Profile.POWER
    metrics = ("power_w", "energy_wh", "voltage_v")
    alert_rules = (AlertRule("overload", "power_w", 8000.0, 6000.0, "critical"),)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.base_w = rng.uniform(150.0, 2500.0)
        self.energy_wh = rng.uniform(0.0, 50_000.0)
        self.spike_left = 0

    def step(self, dt_s: float) -> list[tuple[str, float]]:
        self.t += dt_s
        rng = self.rng
        daily = 1.0 + 0.4 * math.sin(2 * math.pi * (self.t / DAY_S))
        power = self.base_w * daily * rng.uniform(0.9, 1.1)
        if self.spike_left == 0 and rng.random() < 0.03:
            self.spike_left = rng.randint(1, 3)  # a motor start or a kettle: 3-6x for a few samples
        if self.spike_left:
            self.spike_left -= 1
            power *= rng.uniform(3.0, 6.0)
        self.energy_wh += power * dt_s / 3600.0
        return [
            ("power_w", round(power, 1)),
            ("energy_wh", round(self.energy_wh, 3)),
            ("voltage_v", round(rng.gauss(230.0, 1.5), 1)),
        ]


class GpsSignal(Signal):
    profile = Profile.GPS
    metrics = ("lat", "lon", "speed_kmh", "heading_deg")
    alert_rules = (AlertRule("overspeed", "speed_kmh", 90.0, 80.0),)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.lat = rng.uniform(-55.0, 65.0)
        self.lon = rng.uniform(-170.0, 170.0)
        self.speed = rng.uniform(0.0, 60.0)
        self.heading = rng.uniform(0.0, 360.0)

    def step(self, dt_s: float) -> list[tuple[str, float]]:
        self.t += dt_s
        rng = self.rng
        # speed mean-reverts to 50 km/h; sometimes the vehicle stops
        self.speed += 0.1 * (50.0 - self.speed) + rng.gauss(0.0, 5.0)
        if rng.random() < 0.02:
            self.speed = 0.0
        self.speed = min(max(self.speed, 0.0), 180.0)
        self.heading = (self.heading + rng.gauss(0.0, 10.0)) % 360.0
        dist_km = self.speed * dt_s / 3600.0
        rad = math.radians(self.heading)
        self.lat += dist_km * math.cos(rad) / 111.0
        self.lon += dist_km * math.sin(rad) / (111.0 * max(math.cos(math.radians(self.lat)), 0.01))
        self.lat = min(max(self.lat, -89.9), 89.9)
        self.lon = (self.lon + 180.0) % 360.0 - 180.0
        return [
            ("lat", round(self.lat, 6)),
            ("lon", round(self.lon, 6)),
            ("speed_kmh", round(self.speed, 1)),
            ("heading_deg", round(self.heading, 1)),
        ]


SIGNALS: dict[Profile, type[Signal]] = {Profile.ENV: EnvSignal, Profile.POWER: PowerSignal, Profile.GPS: GpsSignal}
MIXED_ORDER = (Profile.ENV, Profile.POWER, Profile.GPS)


def profile_for(profile: str, index: int) -> Profile:
    """The profile of device ``index`` (``mixed`` cycles env, power, gps)."""
    if profile == "mixed":
        return MIXED_ORDER[index % len(MIXED_ORDER)]
    return Profile(profile)


def make_signal(profile: Profile, seed: int, index: int) -> Signal:
    """The signal generator of device ``index`` under ``seed``."""
    return SIGNALS[profile](device_rng(seed, index))
