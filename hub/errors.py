"""Errors of the hub service (under :class:`protocol.errors.FleetError`).

    FleetError
    └── HubError          bad hub settings, a broker that refuses the hub, a store that cannot open
"""

from __future__ import annotations

from protocol.errors import FleetError


class HubError(FleetError):
    """A hub operation that cannot be done as asked; the message says what to do next."""
