"""The schema of fleet.db and its versioned migrations (``PRAGMA user_version``).

Every process that opens the database for writing brings it to :data:`CURRENT_VERSION` first
(:func:`migrate`, called by :func:`hub.storage.connection.open_database`), so tables never
"appear later" and no reader checks whether a table exists.

Versions
    0   an empty file, or a file written before the schema had a version. Files of the release
        before this package have ``user_version`` 0 and some or all of the version-1 tables
        (each component created its own): migration 1 creates the missing ones.
    1   the schema of that release, unchanged (so its files upgrade without touching a row).
    2   the compact time-series layout: integer keys for devices, metrics and (device, metric)
        series; readings in ``samples``, a WITHOUT ROWID table clustered on (series, ts, ...) so
        one device's metric over a time range is one range scan; values packed
        (:mod:`hub.storage.values`); message keys in ``message_keys`` (WITHOUT ROWID, the
        exactly-once key (device, boot, seq) is its primary key). ``readings`` and ``messages``
        become read-only views with the version-1 columns (less the row ids), for ad-hoc SQL.
    3   ``rollups``: count, min, max, sum and last value per series, period (60 s, 3600 s) and
        period start, kept when retention deletes the raw readings (:mod:`hub.storage.rollups`);
        built from the readings already stored.
    4   device contract v2: ``gaps.dropped_at``; ``deadletters.boot``/``seq`` (unique per device when
        set); ``devices.incarnation``/``boot_ts``; table ``device_resets``. Every ``boot`` column of
        the stream tables holds ``incarnation * 2**32 + boot`` (hub/incarnations.py).
    5   firmware images, rollouts and each device's part in a rollout (``firmware_images``,
        ``rollouts``, ``rollout_devices``; :mod:`hub.storage.firmware`): three new tables, nothing
        else touched.
    6   ``quotas``: publish quotas of the embedded broker per principal or per role
        (``broker.quota``); a NULL field keeps the broker's default.
    7   device configuration and self-description (:mod:`hub.storage.config`): ``config_devices``,
        ``config_keys``, ``descriptions``, ``range_flags``; four new tables, nothing else touched.
    8   hub-side alarms (:mod:`hub.storage.alarms`): ``alarm_rules``, ``alarms``, ``alarm_events``;
        sleepy presence: ``devices.sleep_s`` (the wake period a device declared) and
        ``devices.flaps`` (online/offline flaps counted by the hub).
    9   ``message_runs`` replaces ``message_keys``: the exactly-once key as runs of contiguous seqs
        per (device, boot), each message's receive time and clock lag packed in 4 bytes
        (:mod:`hub.storage.runs`); the ``readings`` and ``messages`` views read it.
    10  ``rollups.low``, ``high`` and ``last`` are packed like ``samples.value`` (no declared type).

A migration runs inside one ``BEGIN IMMEDIATE`` transaction together with the new
``user_version``: several processes may open the file at once, and exactly one of them upgrades
it while the others wait on the lock and then find it done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.storage.dialect import ddl_to_postgres
from hub.storage.errors import StorageError
from hub.storage.rollups import Fold, fold
from hub.storage.runs import build_runs, sql_message_meta
from hub.storage.values import SQL_UNPACK, pack, unpack

# Version 1: the tables as the release before this package created them (byte-for-byte the same DDL,
# so an upgraded file and a new one are the same).
V1_TABLES: dict[str, str] = {
    "principals": """CREATE TABLE IF NOT EXISTS principals (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL,
                grp TEXT,
                tags TEXT NOT NULL DEFAULT '[]'
            )""",
    "messages": """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, boot, seq)
)""",
    "readings": """CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0
)""",
    "latest": """CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID""",
    "alerts": """CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    code TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (device_id, boot, seq)
)""",
    "streams": """CREATE TABLE IF NOT EXISTS streams (
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, boot)
) WITHOUT ROWID""",
    "gaps": """CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    closed_at REAL
)""",
    "deadletters": """CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY,
    device_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL
)""",
    "command_replies": """CREATE TABLE IF NOT EXISTS command_replies (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    received_at REAL NOT NULL
)""",
    "devices": """CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    state_since REAL NOT NULL,
    last_seen REAL,
    fw TEXT,
    boot INTEGER,
    enc TEXT,
    interval_s INTEGER
)""",
    "presence_events": """CREATE TABLE IF NOT EXISTS presence_events (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    boot INTEGER,
    ts REAL NOT NULL
)""",
    "commands": """CREATE TABLE IF NOT EXISTS commands (
                id TEXT PRIMARY KEY,
                device_id TEXT NOT NULL,
                name TEXT NOT NULL,
                args TEXT NOT NULL DEFAULT '{}',
                state TEXT NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at REAL,
                detail TEXT NOT NULL DEFAULT '',
                result TEXT NOT NULL DEFAULT '{}',
                operator TEXT,
                owner TEXT
            )""",
    "command_events": """CREATE TABLE IF NOT EXISTS command_events (
                command_id TEXT NOT NULL,
                state TEXT NOT NULL,
                ts REAL NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
    "hub_status": """CREATE TABLE IF NOT EXISTS hub_status (
    worker TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    broker TEXT NOT NULL,
    connected INTEGER NOT NULL,
    stats TEXT NOT NULL
)""",
    "hub_adoptions": """CREATE TABLE IF NOT EXISTS hub_adoptions (
    worker TEXT PRIMARY KEY,
    adopter TEXT NOT NULL,
    since REAL NOT NULL
)""",
}

V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS principals_grp ON principals(grp)",
    "CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts)",
    "CREATE INDEX IF NOT EXISTS gaps_open ON gaps (device_id, boot) WHERE missing > 0",
    "CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters (reason)",
    "CREATE INDEX IF NOT EXISTS command_replies_cmd ON command_replies (command_id)",
    "CREATE INDEX IF NOT EXISTS presence_events_device ON presence_events (device_id, ts)",
    "CREATE INDEX IF NOT EXISTS commands_device ON commands(device_id, created_at)",
    "CREATE INDEX IF NOT EXISTS commands_state ON commands(state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS command_events_cmd ON command_events(command_id, ts)",
)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _expected_columns(table: str) -> set[str]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(V1_TABLES[table])
        return set(_columns(mem, table))
    finally:
        mem.close()


def _to_v1(conn: sqlite3.Connection, path: Path) -> None:
    """Version 0 -> 1: check that the tables already there are ours, then create the missing ones."""
    existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in V1_TABLES.keys() & existing:
        missing = _expected_columns(table) - set(_columns(conn, table))
        if missing:
            raise StorageError(path, f"{path} is not a fleet database: its table {table!r} lacks {sorted(missing)}",
                               "pass --db with the right file, or move this one away")
    for ddl in (*V1_TABLES.values(), *V1_INDEXES):
        conn.execute(ddl)


V2_TABLES = (
    """CREATE TABLE device_keys (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE
)""",
    """CREATE TABLE metric_keys (
    id INTEGER PRIMARY KEY,
    metric TEXT NOT NULL UNIQUE
)""",
    """CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    device INTEGER NOT NULL REFERENCES device_keys (id),
    metric INTEGER NOT NULL REFERENCES metric_keys (id),
    UNIQUE (device, metric)
)""",
    # ts: device time in ms; boot/seq/idx: the message and position it came in (unique per device);
    # value: packed, see hub/storage/values.py (no declared type, so SQLite converts nothing)
    """CREATE TABLE samples (
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    value NOT NULL,
    PRIMARY KEY (series, ts, boot, seq, idx)
) WITHOUT ROWID""",
    # the exactly-once key; kind 0 telemetry, 1 alert; received_at in ms; the device's own ts is
    # received_at - lag_ms (a small number for a device with a good clock: 1 to 3 bytes instead of 6)
    """CREATE TABLE message_keys (
    device INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    lag_ms INTEGER NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID""",
    # running totals of rows ever stored (retention does not lower them): rates without counting
    """CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID""",
)

V2_VIEWS = (
    f"""CREATE VIEW readings AS
SELECT d.device_id AS device_id, s.boot AS boot, s.seq AS seq, s.idx AS idx, m.metric AS metric,
       {SQL_UNPACK.format(col="s.value")} AS value, s.ts / 1000.0 AS ts, k.received_at / 1000.0 AS received_at,
       COALESCE(k.skewed, 0) AS skewed
FROM samples s JOIN series r ON r.id = s.series JOIN device_keys d ON d.id = r.device
JOIN metric_keys m ON m.id = r.metric
LEFT JOIN message_keys k ON k.device = r.device AND k.boot = s.boot AND k.seq = s.seq""",
    """CREATE VIEW messages AS
SELECT d.device_id AS device_id, k.boot AS boot, k.seq AS seq, CASE k.kind WHEN 0 THEN 't' ELSE 'a' END AS kind,
       k.received_at - k.lag_ms AS ts, k.received_at / 1000.0 AS received_at, k.skewed AS skewed
FROM message_keys k JOIN device_keys d ON d.id = k.device""",
)


def _to_v2(conn: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 2: move readings and messages into the compact layout, row by row, then drop the old tables."""
    conn.create_function("fleet_pack", 1, pack, deterministic=True)
    for ddl in V2_TABLES:
        conn.execute(ddl)
    conn.execute("INSERT INTO device_keys (device_id) SELECT device_id FROM readings UNION SELECT device_id FROM messages")
    conn.execute("INSERT INTO metric_keys (metric) SELECT DISTINCT metric FROM readings ORDER BY metric")
    conn.execute("INSERT INTO series (device, metric) SELECT DISTINCT d.id, m.id FROM readings r"
                 " JOIN device_keys d ON d.device_id = r.device_id JOIN metric_keys m ON m.metric = r.metric"
                 " ORDER BY d.id, m.id")
    conn.execute(
        "INSERT INTO samples (series, ts, boot, seq, idx, value)"
        " SELECT s.id, CAST(round(r.ts * 1000) AS INTEGER), r.boot, r.seq, r.idx, fleet_pack(r.value)"
        " FROM readings r JOIN device_keys d ON d.device_id = r.device_id JOIN metric_keys m ON m.metric = r.metric"
        " JOIN series s ON s.device = d.id AND s.metric = m.id ORDER BY s.id, 2, r.boot, r.seq, r.idx")
    conn.execute(
        "INSERT INTO message_keys (device, boot, seq, kind, received_at, lag_ms, skewed)"
        " SELECT d.id, g.boot, g.seq, CASE g.kind WHEN 't' THEN 0 ELSE 1 END,"
        " CAST(round(g.received_at * 1000) AS INTEGER), CAST(round(g.received_at * 1000) AS INTEGER) - g.ts, g.skewed"
        " FROM messages g JOIN device_keys d ON d.device_id = g.device_id ORDER BY d.id, g.boot, g.seq")
    conn.execute("INSERT INTO counters (name, value) SELECT 'readings', COUNT(*) FROM samples")
    conn.execute("INSERT INTO counters (name, value) SELECT 'messages', COUNT(*) FROM message_keys")
    conn.execute("DROP TABLE readings")
    conn.execute("DROP TABLE messages")
    for ddl in V2_VIEWS:
        conn.execute(ddl)


V3_ROLLUPS = """CREATE TABLE rollups (
    series INTEGER NOT NULL,
    period INTEGER NOT NULL,
    start INTEGER NOT NULL,
    count INTEGER NOT NULL,
    low REAL NOT NULL,
    high REAL NOT NULL,
    total REAL NOT NULL,
    last REAL NOT NULL,
    last_dt INTEGER NOT NULL,
    PRIMARY KEY (series, period, start)
) WITHOUT ROWID"""
"""period in seconds; start in ms like ``samples.ts``; last_dt: ms from start to the last value (3 bytes,
not 6); mean = total / count. Version 10 (:data:`V10_ROLLUPS`) packs low, high and last."""

V10_ROLLUPS = """CREATE TABLE rollups (
    series INTEGER NOT NULL,
    period INTEGER NOT NULL,
    start INTEGER NOT NULL,
    count INTEGER NOT NULL,
    low NOT NULL,
    high NOT NULL,
    total REAL NOT NULL,
    last NOT NULL,
    last_dt INTEGER NOT NULL,
    PRIMARY KEY (series, period, start)
) WITHOUT ROWID"""
"""low, high and last hold readings' values as they come, so they are packed like ``samples.value``
(:mod:`hub.storage.values`: 1 to 4 bytes instead of 8, no declared type so SQLite converts nothing);
total is a sum, rarely a short decimal, and stays REAL. bench/storage.py: 2.2 -> 1.7 bytes per reading."""

ROLLUP_COLUMNS = ("series", "period", "start", "count", "low", "high", "total", "last", "last_dt")


def _value_of(col: str) -> str:
    """SQL for the reading value a packed column holds."""
    return SQL_UNPACK.format(col=col)


_ROLLUP_MERGE = (
    "INSERT INTO rollups (series, period, start, count, low, high, total, last, last_dt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (series, period, start) DO UPDATE SET"
    " count = rollups.count + excluded.count, low = {low}, high = {high}, total = rollups.total + excluded.total,"
    " last = CASE WHEN excluded.last_dt >= rollups.last_dt THEN excluded.last ELSE rollups.last END,"
    " last_dt = MAX(rollups.last_dt, excluded.last_dt)")
"""Merge a batch's aggregate into the stored one (columns qualified: PostgreSQL finds bare names ambiguous)."""

ROLLUP_UPSERT = _ROLLUP_MERGE.format(
    low=f"CASE WHEN {_value_of('excluded.low')} < {_value_of('rollups.low')} THEN excluded.low ELSE rollups.low END",
    high=f"CASE WHEN {_value_of('excluded.high')} > {_value_of('rollups.high')} THEN excluded.high ELSE rollups.high END")
"""SQLite: low and high are compared as values: packed integers (m * 8 + k) do not sort like the values they
hold, and a file upgraded to version 10 mixes them with REALs."""

ROLLUP_UPSERT_PG = _ROLLUP_MERGE.format(low="MIN(rollups.low, excluded.low)", high="MAX(rollups.high, excluded.high)")
"""PostgreSQL keeps plain doubles (its COPY path translates MIN/MAX of two values to LEAST/GREATEST)."""


def rollup_rows(acc: Fold, value: Callable[[float], int | float] = float) -> list[tuple[Any, ...]]:
    """Folded aggregates as ``rollups`` rows (the last value's time relative to the period start); ``value``
    stores low, high and last (:func:`hub.storage.values.pack` on version 10 and later)."""
    return [(series, period, start, count, value(low), value(high), total, value(last), last_ts - start)
            for (series, period, start), (count, low, high, total, last, last_ts) in acc.items()]


def _to_v3(conn: sqlite3.Connection, path: Path) -> None:
    """Version 2 -> 3: the rollups table, filled from the readings already stored (series by series)."""
    conn.execute(V3_ROLLUPS)
    series_ids = [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id")]
    for sid in series_ids:
        acc = fold((sid, ts, unpack(v)) for ts, v in conn.execute(
            "SELECT ts, value FROM samples WHERE series = ? ORDER BY ts", (sid,)))
        conn.executemany(ROLLUP_UPSERT, rollup_rows(acc))


V4_CONTRACT = (
    "ALTER TABLE gaps ADD COLUMN dropped_at REAL",
    "ALTER TABLE deadletters ADD COLUMN boot INTEGER",
    "ALTER TABLE deadletters ADD COLUMN seq INTEGER",
    "CREATE UNIQUE INDEX IF NOT EXISTS deadletters_key ON deadletters (device_id, boot, seq) WHERE seq IS NOT NULL",
    "ALTER TABLE devices ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE devices ADD COLUMN boot_ts INTEGER",
    """CREATE TABLE IF NOT EXISTS device_resets (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    old_boot INTEGER,
    new_boot INTEGER NOT NULL,
    ts REAL NOT NULL
)""",
)


def _to_v4_contract(conn: sqlite3.Connection, path: Path) -> None:
    """Device contract v2 (firmware_protocol.md 4.1, 5.4, 7.1): dropped gaps, dead letters under their seq,
    device incarnations (resets) and the power-up time of uptime-stamping devices. Additive only."""
    for ddl in V4_CONTRACT:
        conn.execute(ddl)


FIRMWARE_TABLES = (
    """CREATE TABLE firmware_images (
    id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    added_at REAL NOT NULL,
    UNIQUE (version, model)
)""",
    """CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES firmware_images(id),
    grp TEXT NOT NULL,
    stages TEXT NOT NULL,
    stage INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    max_failure_rate REAL NOT NULL,
    max_concurrent INTEGER NOT NULL,
    bandwidth REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)""",
    """CREATE TABLE rollout_devices (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    device_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    state TEXT NOT NULL,
    from_fw TEXT NOT NULL DEFAULT '',
    progress INTEGER NOT NULL DEFAULT 0,
    bytes_served INTEGER NOT NULL DEFAULT 0,
    applying_boot INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
) WITHOUT ROWID""",
    "CREATE INDEX rollouts_state ON rollouts (state)",
)


def _to_v5(conn: sqlite3.Connection, path: Path) -> None:
    """Version 4 -> 5: firmware images and staged rollouts (issue 16): three new tables, nothing else touched."""
    for ddl in FIRMWARE_TABLES:
        conn.execute(ddl)


QUOTAS_TABLE = """CREATE TABLE IF NOT EXISTS quotas (
    subject TEXT PRIMARY KEY,
    msgs_per_s REAL,
    burst_msgs REAL,
    bytes_per_s REAL,
    burst_bytes REAL,
    hard_limit_s REAL
)"""
"""One row per principal id or per ``role:<role>`` (see ``broker.registry.role_subject``)."""


def _to_v6_quotas(conn: sqlite3.Connection, path: Path) -> None:
    """Version 5 -> 6: the broker's per-principal publish quotas."""
    conn.execute(QUOTAS_TABLE)


CONFIG_TABLES = (
    """CREATE TABLE IF NOT EXISTS config_devices (
    device_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    reported_version INTEGER NOT NULL DEFAULT 0,
    reported_at REAL,
    sent_version INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    desc_hash TEXT NOT NULL DEFAULT '',
    birth_cfg INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS config_keys (
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    desired TEXT,
    set_version INTEGER NOT NULL DEFAULT 0,
    set_at REAL,
    reported TEXT,
    reported_version INTEGER NOT NULL DEFAULT 0,
    applied_at REAL,
    refused_reason TEXT,
    refused_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, key)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS descriptions (
    hash TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    device_id TEXT NOT NULL,
    received_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS range_flags (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_value REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID""",
)
"""Device configuration, descriptions and range flags (:mod:`hub.storage.config`)."""


def _to_v7_config(conn: sqlite3.Connection, path: Path) -> None:
    """Version 6 -> 7: device configuration (desired/reported per key), descriptions, range flags (issue 15a)."""
    for ddl in CONFIG_TABLES:
        conn.execute(ddl)


ALARM_DDL = (
    # kind: above, below (a metric against a threshold), no_data, offline; clear: the hysteresis
    # threshold (NULL: the threshold itself); action: a command sent when an alarm is raised
    """CREATE TABLE alarm_rules (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    metric TEXT,
    threshold REAL,
    clear REAL,
    for_s REAL NOT NULL DEFAULT 0,
    severity TEXT NOT NULL,
    grp TEXT,
    action_command TEXT,
    action_args TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
)""",
    # state: active, acknowledged, cleared; flaps: times it was raised again soon after it cleared
    """CREATE TABLE alarms (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    value REAL,
    detail TEXT NOT NULL DEFAULT '',
    raised_at REAL NOT NULL,
    acked_at REAL,
    acked_by TEXT,
    cleared_at REAL,
    flaps INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
)""",
    "CREATE INDEX alarms_open ON alarms (rule, device_id) WHERE state != 'cleared'",
    "CREATE INDEX alarms_state ON alarms (state, raised_at)",
    """CREATE TABLE alarm_events (
    alarm_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    detail TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX alarm_events_alarm ON alarm_events (alarm_id, ts)",
    "ALTER TABLE devices ADD COLUMN sleep_s INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE devices ADD COLUMN flaps INTEGER NOT NULL DEFAULT 0",
)


def _to_v8_alarms(conn: sqlite3.Connection, path: Path) -> None:
    """Version 7 -> 8: alarm rules, alarms and their history; the sleepy-presence columns of ``devices``."""
    for ddl in ALARM_DDL:
        conn.execute(ddl)


MESSAGE_RUNS = """CREATE TABLE message_runs (
    device INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    skewed INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    lag_ms INTEGER NOT NULL,
    offsets BLOB NOT NULL,
    PRIMARY KEY (device, boot, first_seq)
) WITHOUT ROWID"""
"""The exactly-once key: seqs first_seq..last_seq of (device, boot) are stored. kind 0 telemetry, 1 alert;
received_at and lag_ms are the first message's (ms); offsets hold the others' (hub/storage/runs.py)."""

RUN_OF_SAMPLE = ("k.device = r.device AND k.boot = s.boot AND k.first_seq = (SELECT x.first_seq FROM message_runs x"
                 " WHERE x.device = r.device AND x.boot = s.boot AND x.first_seq <= s.seq ORDER BY x.first_seq DESC"
                 " LIMIT 1) AND k.last_seq >= s.seq")
"""Join condition: ``k`` is the run that holds the message of sample ``s`` of series ``r`` (one index look-up)."""

_SAMPLE_RECEIVED, _ = sql_message_meta("k", "s.seq")
_MSG_RECEIVED, _MSG_LAG = sql_message_meta("k", "m.seq")

V9_VIEWS = (
    f"""CREATE VIEW readings AS
SELECT d.device_id AS device_id, s.boot AS boot, s.seq AS seq, s.idx AS idx, m.metric AS metric,
       {SQL_UNPACK.format(col="s.value")} AS value, s.ts / 1000.0 AS ts, {_SAMPLE_RECEIVED} / 1000.0 AS received_at,
       COALESCE(k.skewed, 0) AS skewed
FROM samples s JOIN series r ON r.id = s.series JOIN device_keys d ON d.id = r.device
JOIN metric_keys m ON m.id = r.metric
LEFT JOIN message_runs k ON {RUN_OF_SAMPLE}""",
    f"""CREATE VIEW messages AS
WITH RECURSIVE m (device, boot, first_seq, last_seq, seq) AS (
    SELECT device, boot, first_seq, last_seq, first_seq FROM message_runs
    UNION ALL
    SELECT device, boot, first_seq, last_seq, seq + 1 FROM m WHERE seq < last_seq)
SELECT d.device_id AS device_id, k.boot AS boot, m.seq AS seq, CASE k.kind WHEN 0 THEN 't' ELSE 'a' END AS kind,
       {_MSG_RECEIVED} - {_MSG_LAG} AS ts, {_MSG_RECEIVED} / 1000.0 AS received_at, k.skewed AS skewed
FROM m JOIN message_runs k ON k.device = m.device AND k.boot = m.boot AND k.first_seq = m.first_seq
JOIN device_keys d ON d.id = k.device""",
)

RUN_COLUMNS = ("device", "boot", "first_seq", "last_seq", "kind", "skewed", "received_at", "lag_ms", "offsets")

RUN_UPSERT = (
    "INSERT INTO message_runs (device, boot, first_seq, last_seq, kind, skewed, received_at, lag_ms, offsets)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, boot, first_seq) DO UPDATE SET"
    " last_seq = excluded.last_seq, kind = excluded.kind, skewed = excluded.skewed,"
    " received_at = excluded.received_at, lag_ms = excluded.lag_ms, offsets = excluded.offsets")
"""Store a new run or a grown one."""


def _to_v9_message_runs(conn: sqlite3.Connection, path: Path) -> None:
    """Version 8 -> 9: the per-message key rows become runs (stream by stream), then the views follow."""
    conn.execute(MESSAGE_RUNS)
    streams = conn.execute("SELECT DISTINCT device, boot FROM message_keys ORDER BY device, boot").fetchall()
    for device, boot in streams:
        messages = conn.execute("SELECT seq, kind, skewed, received_at, lag_ms FROM message_keys"
                                " WHERE device = ? AND boot = ? ORDER BY seq", (device, boot))
        conn.executemany(RUN_UPSERT, [run.row() for run in build_runs(device, boot, messages)])
    conn.execute("DROP VIEW readings")
    conn.execute("DROP VIEW messages")
    conn.execute("DROP TABLE message_keys")
    for ddl in V9_VIEWS:
        conn.execute(ddl)


def _to_v10_packed_rollups(conn: sqlite3.Connection, path: Path) -> None:
    """Version 9 -> 10: rollups keep low, high and last packed (:data:`V10_ROLLUPS`); the stored ones are packed
    on the way (the same values: :func:`hub.storage.values.unpack` gives back each double)."""
    conn.execute(V10_ROLLUPS.replace("CREATE TABLE rollups", "CREATE TABLE rollups_v10"))
    conn.create_function("fleet_pack", 1, pack, deterministic=True)
    conn.execute("INSERT INTO rollups_v10 SELECT series, period, start, count, fleet_pack(low), fleet_pack(high), total,"
                 " fleet_pack(last), last_dt FROM rollups")
    conn.create_function("fleet_pack", 1, None)
    conn.execute("DROP TABLE rollups")
    conn.execute("ALTER TABLE rollups_v10 RENAME TO rollups")


Migration = Callable[[sqlite3.Connection, Path], None]

MIGRATIONS: tuple[Migration, ...] = (_to_v1, _to_v2, _to_v3, _to_v4_contract, _to_v5, _to_v6_quotas,
                                     _to_v7_config, _to_v8_alarms, _to_v9_message_runs, _to_v10_packed_rollups)
"""``MIGRATIONS[n - 1]`` brings a file from version ``n - 1`` to version ``n``."""

CURRENT_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's version; StorageError when it was written by a newer release."""
    version = user_version(conn)
    if version > CURRENT_VERSION:
        raise StorageError(path, f"{path} has schema version {version}, newer than this fleet-hub knows "
                           f"({CURRENT_VERSION})", "upgrade fleet-hub, or use the release that wrote it")
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database to :data:`CURRENT_VERSION` in one transaction; returns the version it had."""
    if check_version(conn, path) == CURRENT_VERSION:
        return CURRENT_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = check_version(conn, path)  # another process may have upgraded it while we waited for the lock
        for migration in MIGRATIONS[found:]:
            migration(conn, path)
        conn.execute(f"PRAGMA user_version = {CURRENT_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


# ---------------------------------------------------------------------------------------- PostgreSQL twin
#
# A PostgreSQL database keeps its version in the one-row table ``schema_version`` (there is no
# user_version). PG_STEPS[n] is the DDL that brings it from version n - 1 to n: the same tables as the
# SQLite migration, through :func:`hub.storage.dialect.ddl_to_postgres`. No PostgreSQL database ever
# held the version-1 layout of readings and messages, so step 1 leaves those two tables out and step 2
# only creates the compact layout and its views; the data-moving parts of SQLite's migrations have
# nothing to move. A new SQLite migration needs its entry here (tests/storage check the two agree).

PG_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

_PG_V1_SKIP = {"readings", "messages"}

PG_V2_VIEWS = (
    """CREATE VIEW readings AS
SELECT d.device_id AS device_id, s.boot AS boot, s.seq AS seq, s.idx AS idx, m.metric AS metric,
       s.value AS value, s.ts / 1000.0 AS ts, k.received_at / 1000.0 AS received_at,
       COALESCE(k.skewed, 0) AS skewed
FROM samples s JOIN series r ON r.id = s.series JOIN device_keys d ON d.id = r.device
JOIN metric_keys m ON m.id = r.metric
LEFT JOIN message_keys k ON k.device = r.device AND k.boot = s.boot AND k.seq = s.seq""",
    V2_VIEWS[1],
)
"""The compatibility views; ``samples.value`` is a plain double on PostgreSQL (nothing to unpack)."""

# (command_events has no key and is read in insertion order, "ORDER BY ts, rowid": ddl_to_postgres gives
# such a table a rowid identity column)
_PG_V1_TABLES = {name: ddl for name, ddl in V1_TABLES.items() if name not in _PG_V1_SKIP}


def _pg(*ddl: str) -> tuple[str, ...]:
    return tuple(ddl_to_postgres(d) for d in ddl)


def _pg_message_meta(run: str, seq: str) -> tuple[str, str]:
    """:func:`hub.storage.runs.sql_message_meta` for PostgreSQL (``get_byte`` of the bytea offsets)."""
    at = f"(4 * ({seq} - {run}.first_seq) - 4)"
    byte = lambda i: f"get_byte({run}.offsets, CAST({at} + {i} AS INTEGER))"  # noqa: E731
    received = (f"({run}.received_at + CASE WHEN {seq} = {run}.first_seq THEN 0 ELSE"
                f" {byte(0)} * 256 + {byte(1)} END)")
    lag = (f"({run}.lag_ms + CASE WHEN {seq} = {run}.first_seq THEN 0 ELSE"
           f" {byte(2)} * 256 + {byte(3)} - 32768 END)")
    return received, lag


_PG_SAMPLE_RECEIVED, _ = _pg_message_meta("k", "s.seq")
_PG_MSG_RECEIVED, _PG_MSG_LAG = _pg_message_meta("k", "m.seq")
PG_V9_VIEWS = (
    V9_VIEWS[0].replace(SQL_UNPACK.format(col="s.value"), "s.value").replace(_SAMPLE_RECEIVED, _PG_SAMPLE_RECEIVED),
    V9_VIEWS[1].replace(_MSG_RECEIVED, _PG_MSG_RECEIVED).replace(_MSG_LAG, _PG_MSG_LAG),
)
"""The views of version 9 on PostgreSQL: plain double values, offsets read with get_byte."""


PG_TWINS: dict[Migration, tuple[str, ...]] = {
    _to_v1: _pg(*_PG_V1_TABLES.values(), *(i for i in V1_INDEXES if "readings" not in i)),
    _to_v2: (*_pg(*V2_TABLES), *PG_V2_VIEWS,
             "INSERT INTO counters (name, value) VALUES ('readings', 0), ('messages', 0)"),
    _to_v3: _pg(V3_ROLLUPS),
    _to_v4_contract: _pg(*V4_CONTRACT),
    _to_v5: _pg(*FIRMWARE_TABLES),
    _to_v6_quotas: _pg(QUOTAS_TABLE),
    _to_v7_config: _pg(*CONFIG_TABLES),
    _to_v8_alarms: _pg(*ALARM_DDL),
    _to_v9_message_runs: (
        ddl_to_postgres(MESSAGE_RUNS), "DROP VIEW readings", "DROP VIEW messages", "DROP TABLE message_keys",
        *PG_V9_VIEWS, "CREATE SEQUENCE IF NOT EXISTS ingest_writes"),
    _to_v10_packed_rollups: (),  # PostgreSQL keeps values as plain doubles: nothing to pack
}
"""The PostgreSQL DDL of each SQLite migration (keyed by the migration, so renumbering keeps them paired)."""

PG_STEPS: dict[int, tuple[str, ...]] = {n: PG_TWINS[m] for n, m in enumerate(MIGRATIONS, start=1) if m in PG_TWINS}
"""``PG_STEPS[n]`` brings a PostgreSQL database from version ``n - 1`` to ``n`` (every n: tests/storage checks)."""


def pg_version(conn: Any) -> int:
    """The schema version of a PostgreSQL database (0: no fleet schema yet)."""
    row = conn.execute_native("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    row = conn.execute_native("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def check_pg_version(conn: Any) -> int:
    """The database's version; StorageError when a newer release wrote it."""
    version = pg_version(conn)
    if version > CURRENT_VERSION:
        raise StorageError(conn.name, f"{conn.name} has schema version {version}, newer than this fleet-hub knows "
                           f"({CURRENT_VERSION})", "upgrade fleet-hub, or use the release that wrote it")
    return version


def migrate_postgres(conn: Any) -> int:
    """Bring a PostgreSQL database to :data:`CURRENT_VERSION` in one transaction; returns the version it had.

    A transaction-scoped advisory lock makes concurrent openers (workers starting together on several
    machines) wait for the one that upgrades; DDL is transactional, so a failed upgrade leaves nothing.
    """
    from hub.storage.postgres import MIGRATION_LOCK

    if check_pg_version(conn) == CURRENT_VERSION:
        return CURRENT_VERSION
    conn.execute_native("BEGIN")
    try:
        conn.execute_native("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        found = check_pg_version(conn)
        if found < CURRENT_VERSION:
            # a database that holds foreign tables of the same names is not ours: say so rather than mix
            if found == 0:
                _refuse_foreign_pg(conn)
            for version in range(found + 1, CURRENT_VERSION + 1):
                for ddl in PG_STEPS[version]:
                    conn.execute_native(ddl)
            conn.execute_native(PG_VERSION_TABLE)
            conn.execute_native("DELETE FROM schema_version")
            conn.execute_native("INSERT INTO schema_version (version) VALUES (%s)", [CURRENT_VERSION])
        conn.execute_native("COMMIT")
    except BaseException:
        conn.rollback()
        raise
    return found


def _refuse_foreign_pg(conn: Any) -> None:
    names = {r[0] for r in conn.execute_native(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").fetchall()}
    ours = names & (set(V1_TABLES) | {"samples", "message_keys", "device_keys"})
    if ours:
        raise StorageError(conn.name, f"{conn.name} holds tables named like fleet's ({', '.join(sorted(ours))}) "
                           "but no fleet schema version", "pass --db with another database, or drop those tables")
