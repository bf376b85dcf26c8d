"""Dashboard tests reuse the command tests' minimal device (tests/commands/command_device.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_COMMANDS = str(Path(__file__).resolve().parents[1] / "commands")
if _COMMANDS not in sys.path:
    sys.path.append(_COMMANDS)
