"""Faults on demand: which devices misbehave, and how.

A fault is asked for as ``KIND=FRACTION`` (``--fault silent=0.05``): that fraction of the
fleet, rounded, at least one device when the fraction is above zero, chosen reproducibly
from the seed. Each kind picks its devices independently, so a device may carry several.

What each kind does once it is active (``fault_start_s`` after the device first connects):

=================  ==========================================================================
disconnect-storm   drop the socket without DISCONNECT every ``storm_period_s`` (the will fires),
                   reconnect at once and send a new birth
silent             keep the socket open and send nothing more, not even PINGREQ
packet-loss        every ``fault_every``-th message takes a seq but is never sent (a gap)
duplicate          every ``fault_every``-th message is published twice with the same seq
clock-skew         every timestamp is ``clock_skew_h`` hours ahead
malformed          every ``fault_every``-th tick publishes garbage on the telemetry topic
                   (it takes no seq: garbage has none)
oversized          every ``fault_every``-th message is padded beyond the payload limit
                   (it takes a seq, like a real message that grew too large)
dead-letter        every ``fault_every``-th message carries a reading out of range: the hub
                   dead-letters it under its seq (kept and re-sent like any message)
bad-credentials    log in with a wrong password; retried every ``bad_login_retry_s``
=================  ==========================================================================

Firmware-update faults (``--ota-fault KIND=FRACTION``, :class:`OtaFault`) are chosen the same
way; :mod:`device_sim.ota` says what each one does.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import TypeVar

from protocol.errors import FleetError


class FaultKind(StrEnum):
    DISCONNECT_STORM = "disconnect-storm"
    SILENT = "silent"
    PACKET_LOSS = "packet-loss"
    DUPLICATE = "duplicate"
    CLOCK_SKEW = "clock-skew"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    DEAD_LETTER = "dead-letter"
    BAD_CREDENTIALS = "bad-credentials"


class OtaFault(StrEnum):
    """Faults of a device's firmware updater (see :mod:`device_sim.ota` for what each does)."""

    CORRUPT_CHUNK = "corrupt-chunk"
    POWER_LOSS = "power-loss"
    BAD_IMAGE = "bad-image"
    OFFLINE = "offline"
    REFUSE = "refuse"
    SLOW_DOWNLOAD = "slow-download"


K = TypeVar("K", FaultKind, OtaFault)


class FaultSpecError(FleetError):
    """A ``--fault`` value that cannot be parsed."""


def parse_fault(text: str) -> tuple[FaultKind, float]:
    """Parse ``KIND=FRACTION`` (fraction in 0..1, or a percentage like ``5%``)."""
    return _parse(text, FaultKind)


def parse_ota_fault(text: str) -> tuple[OtaFault, float]:
    """Parse an OTA fault ``KIND=FRACTION`` (``bad-image=0.1``, ``slow-download=5%``)."""
    return _parse(text, OtaFault)


def _parse(text: str, kinds: type[K]) -> tuple[K, float]:
    kind_text, sep, frac_text = text.partition("=")
    try:
        kind = kinds(kind_text.strip())
    except ValueError:
        known = ", ".join(k.value for k in kinds)
        raise FaultSpecError(f"unknown fault {kind_text!r}: use one of {known}") from None
    if not sep:
        raise FaultSpecError(f"fault {text!r}: write {kind.value}=FRACTION, e.g. {kind.value}=0.1")
    frac_text = frac_text.strip()
    try:
        fraction = float(frac_text[:-1]) / 100 if frac_text.endswith("%") else float(frac_text)
    except ValueError:
        raise FaultSpecError(f"fault {text!r}: {frac_text!r} is not a fraction") from None
    if not 0.0 <= fraction <= 1.0:
        raise FaultSpecError(f"fault {text!r}: the fraction must lie in 0..1")
    return kind, fraction


def assign_faults(fractions: dict[K, float], n_devices: int, seed: int) -> dict[int, frozenset[K]]:
    """Which device indexes (0-based) carry which faults; reproducible from ``seed``."""
    plan: dict[int, set[K]] = {}
    for kind, fraction in sorted(fractions.items()):
        if fraction <= 0 or n_devices == 0:
            continue
        count = min(n_devices, max(1, round(fraction * n_devices)))
        rng = random.Random(f"fleet-sim-fault:{seed}:{kind.value}")
        for index in rng.sample(range(n_devices), count):
            plan.setdefault(index, set()).add(kind)
    return {i: frozenset(kinds) for i, kinds in plan.items()}
