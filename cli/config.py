"""Configuration: flags beat ``FLEET_*`` environment variables, which beat a TOML file.

Click gives the first two (``auto_envvar_prefix="FLEET"``: ``fleet broker --port`` reads
``FLEET_BROKER_PORT``). The TOML file becomes click's ``default_map``, the layer under
them. Its tables are named after commands::

    db = "fleet.db"
    [broker]
    port = 1883
    [hub]
    batch_size = 500
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.errors import FleetError

DEFAULT_CONFIG = Path("fleet.toml")


class ConfigError(FleetError):
    """The configuration file cannot be read."""


def config_path(argv: Sequence[str], environ: dict[str, str] | None = None) -> Path | None:
    """The TOML file to read: ``--config PATH``, else ``$FLEET_CONFIG``, else ``./fleet.toml`` if present."""
    environ = dict(os.environ) if environ is None else environ
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    if environ.get("FLEET_CONFIG"):
        return Path(environ["FLEET_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_default_map(path: Path | None) -> dict[str, Any]:
    """Click's ``default_map`` from a TOML file (empty when there is none)."""
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _normalise(data)


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Parameter keys take click's parameter names (``out-dir`` -> ``out_dir``); a table is a command,
    whose name keeps its dash (``[device-check]``; ``[device_check]`` is accepted for it too)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key.replace("_", "-")] = _normalise(value)
        else:
            out[key.replace("-", "_")] = value
    return out
