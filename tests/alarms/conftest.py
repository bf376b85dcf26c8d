"""Fixtures of the alarm tests: the ``fleet`` CLI as a real subprocess (piped, so its output is JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FLEET = str(Path(sys.executable).with_name("fleet"))


@pytest.fixture
def fleet(db_path: Path) -> Callable[..., Any]:
    """Run ``fleet --db DB ARGS`` piped; returns parsed JSON when it printed any (fails on a non-zero exit)."""

    def run(*args: str, expect: int = 0) -> Any:
        proc = subprocess.run([FLEET, "--db", str(db_path), *args], capture_output=True, timeout=60)
        assert proc.returncode == expect, proc.stderr.decode()
        out = proc.stdout.decode().strip()
        return json.loads(out) if out else proc.stderr.decode()

    return run
