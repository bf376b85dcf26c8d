"""Device conformance checking: drive a live device through ``firmware_protocol.md`` and judge it.

Like the Sparkplug TCK (which plays the host application) and AWS IoT Device Tester (which plays
the cloud), the checker plays the hub's side of the contract for one device: it publishes
commands and watermarks on the device's topics with the hub role and judges what comes back.

- :mod:`.settings`: who to check and how long to wait (:class:`CheckSettings`).
- :mod:`.link`: the checker's MQTT session (a log of everything on ``d/<id>/+``).
- :mod:`.standin`: answers the device's messages with watermarks when no hub does.
- :mod:`.checker`: the scenarios, in order (:func:`run_check`).
- :mod:`.report`: results per section, with evidence.
"""

from hub.conformance.checker import run_check
from hub.conformance.report import Evidence, Outcome, Report, Result
from hub.conformance.settings import CheckSettings

__all__ = ["CheckSettings", "Evidence", "Outcome", "Report", "Result", "run_check"]
