"""Device configuration, the hub's side (firmware_protocol.md section 13): what to send, and the operator's view.

The pure part: :func:`pending` (the keys whose desired value the device has neither applied nor refused
at that version) and :func:`plan` (the ConfigSet that carries them, in the device's form). The library
part, which ``fleet config`` calls: :func:`set_config` (checks each value against the device's
description before anything is stored, then bumps each device's version), :func:`show_config` and
:func:`out_of_sync`. The running hub (:mod:`hub.device_config_service`) sends what is stored.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.storage import ConfigStore, DeviceConfigRow, KeyRow, PrincipalStore, Role, open_database, reading
from protocol.config import ConfigSet, Description, command_error, config_error
from protocol.errors import FleetError


class DeviceConfigError(FleetError):
    """A configuration change the hub refuses before it leaves the hub (one readable line)."""


def same_value(a: Any, b: Any) -> bool:
    """Equal as configuration values: 30 equals 30.0, but true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str) and a == b


def key_pending(k: KeyRow) -> bool:
    """True when the device has neither applied ``k``'s desired value nor refused it since it was set."""
    if not k.has_desired:
        return False
    if k.has_reported and same_value(k.reported, k.desired):
        return False
    return not (k.refused_reason is not None and k.refused_version >= k.set_version)


def pending(dev: DeviceConfigRow) -> dict[str, Any]:
    """Key -> desired value, for every key still to reach the device."""
    return {name: k.desired for name, k in dev.keys.items() if key_pending(k)}


def plan(dev: DeviceConfigRow, description: Description | None, encoding: str) -> ConfigSet | None:
    """The ConfigSet to send ``dev`` now (None: nothing pending). A CBOR device whose description the hub
    holds gets keys as indexes into the description's ``config`` list (section 13.2); others get names."""
    todo = pending(dev)
    if not todo:
        return None
    index = {name: i for i, name in enumerate(description.config_keys())} if description and encoding == "cbor" else {}
    flat: list[Any] = []
    for name, value in sorted(todo.items()):
        flat += [index.get(name, name), value]
    return ConfigSet(version=max(dev.version, 1), set=flat)


def key_name(key: str | int, description: Description | None) -> str | None:
    """A reported key's name (an index is looked up in the description); None when it cannot be resolved."""
    if isinstance(key, str):
        return key
    names = description.config_keys() if description else []
    return names[key] if 0 <= key < len(names) else None


@functools.lru_cache(maxsize=512)
def parse_description(body: str | None) -> Description | None:
    # a fleet has a handful of distinct descriptions; a command to 1,000 devices parsed the same
    # JSON 1,000 times (a sixth of the hub's time per command). Callers only read the model.
    return Description.model_validate_json(body) if body else None


# ------------------------------------------------------------------ library (fleet config ...)


def resolve_targets(db: str | Path, device: str | None, group: str | None, everything: bool) -> list[str]:
    """The device ids of ``DEVICE``, ``--group G`` or ``--all`` (active devices of the registry)."""
    if sum(bool(x) for x in (device, group, everything)) != 1:
        raise DeviceConfigError("name one DEVICE, or --group G, or --all")
    with reading(db) as conn:
        principals = [p for p in PrincipalStore(conn).list(Role.DEVICE, group) if p.active]
    ids = [p.id for p in principals]
    if device:
        if device not in ids:
            raise DeviceConfigError(f"unknown device {device!r} (see fleet devices list)")
        return [device]
    if not ids:
        raise DeviceConfigError(f"no devices in group {group!r}" if group else "no devices registered")
    return ids


def check_against_description(conn: Any, device_ids: Sequence[str], values: dict[str, Any]) -> None:
    """Refuse (DeviceConfigError) a value that does not fit a described device's config keys."""
    store = ConfigStore(conn)
    for device_id in device_ids:
        desc = parse_description(store.device_description(device_id)[1])
        if desc is None:
            continue
        for key, value in values.items():
            why = config_error(desc, key, value)
            if why:
                raise DeviceConfigError(f"device {device_id!r}: {why}; nothing was changed")


def check_command(conn: Any, device_id: str, name: str, args: dict[str, Any]) -> str | None:
    """Why command ``name(args)`` does not fit ``device_id``'s description (None: fits or not described)."""
    desc = parse_description(ConfigStore(conn).device_description(device_id)[1])
    return command_error(desc, name, args) if desc is not None else None


def set_config(db: str | Path, device_ids: Sequence[str], values: dict[str, Any], now: float | None = None) -> dict[str, int]:
    """Store desired ``values`` for each device (checked against its description first, all or nothing);
    returns each device's new version. The running hub sends the change within a second."""
    if not values:
        raise DeviceConfigError("give at least one key=value")
    try:  # what the wire takes: key names of 1..32 chars, at most 32 keys, text up to 256 chars, finite numbers
        ConfigSet(version=1, set=[x for kv in values.items() for x in kv])
    except ValidationError as exc:
        raise DeviceConfigError(f"cannot be sent to a device: {exc.errors(include_url=False)[0]['msg']}; nothing was changed") from None
    conn = open_database(db)
    try:
        check_against_description(conn, device_ids, values)
        return ConfigStore(conn).set_desired(device_ids, values, time.time() if now is None else now)
    finally:
        conn.close()


def _view(dev: DeviceConfigRow, flags: list[tuple[str, str, int, float, float]] | None = None) -> dict[str, Any]:
    todo = pending(dev)
    keys = []
    for name, k in dev.keys.items():
        keys.append({"key": name, "desired": k.desired if k.has_desired else None, "set_version": k.set_version,
                     "reported": k.reported if k.has_reported else None, "applied_version": k.reported_version,
                     "applied_at": k.applied_at, "refused": k.refused_reason, "refused_version": k.refused_version,
                     "pending": name in todo})
    return {"device_id": dev.device_id, "version": dev.version, "reported_version": dev.reported_version,
            "reported_at": dev.reported_at, "sent_version": dev.sent_version, "in_sync": not todo,
            "pending": todo, "refused": {n: k.refused_reason for n, k in dev.keys.items()
                                         if k.refused_reason is not None},
            "description": dev.desc_hash, "keys": keys,
            "out_of_declared_range": [{"metric": m, "count": n, "last_value": v, "last_at": t}
                                      for _, m, n, v, t in flags or []]}


def show_config(db: str | Path, device_id: str) -> dict[str, Any]:
    """Desired, reported, pending difference, version and when applied, for one device."""
    with reading(db) as conn:
        dev = ConfigStore(conn).get(device_id)
        flags = ConfigStore(conn).range_flags(device_id)
        known = PrincipalStore(conn).get(device_id)
    if dev is None:
        if known is None:
            raise DeviceConfigError(f"unknown device {device_id!r} (see fleet devices list)")
        dev = DeviceConfigRow(device_id)
    return _view(dev, flags)


def out_of_sync(db: str | Path) -> list[dict[str, Any]]:
    """Devices whose configuration has not converged: something pending, or refused."""
    with reading(db) as conn:
        devices = ConfigStore(conn).all_devices()
    rows = []
    for dev in devices:
        view = _view(dev)
        if view["pending"] or view["refused"]:
            rows.append({k: view[k] for k in ("device_id", "version", "reported_version", "pending", "refused")})
    return rows
