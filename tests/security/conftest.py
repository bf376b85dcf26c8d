"""Setup of the security tests: the hand-built MQTT packets of tests/broker/raw_mqtt.py are importable here."""

from __future__ import annotations

import sys
from pathlib import Path

# shared rather than copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))
