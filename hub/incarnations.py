"""Device incarnations: how a device whose boot counter went back keeps its old data apart.

A device that comes back with a lower ``boot`` than the hub knows (flash wiped, factory
reset, a replacement board with the same id) starts a new *incarnation* (firmware_protocol.md
4.1). The exactly-once key is (device, incarnation, boot, seq). The hub stores it in the
existing ``boot`` columns as ``incarnation * 2**32 + boot``: a device boot is a u32, so keys of
different incarnations never collide, incarnation 0 (every device that never reset) stores
exactly the device's boot, and no table needs a new unique constraint.
"""

from __future__ import annotations

BOOT_BITS = 32
_BOOT_MASK = (1 << BOOT_BITS) - 1


def stream_boot(incarnation: int, boot: int) -> int:
    """The stored ``boot`` of a device boot in one incarnation (the boot itself in incarnation 0)."""
    return (incarnation << BOOT_BITS) | boot


def device_boot(stored: int) -> int:
    """The boot number the device itself sent."""
    return stored & _BOOT_MASK


def incarnation_of(stored: int) -> int:
    """The incarnation a stored ``boot`` belongs to."""
    return stored >> BOOT_BITS
