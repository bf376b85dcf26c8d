"""fleet.db: its schema, its migrations, and every query on it. Nothing else in the project writes SQL.

This package sits below ``broker/`` and the rest of ``hub/``: it imports only the standard
library and ``protocol``, so the broker (registry) and the hub (everything else) share it.

    errors.py      StorageError: the one error, one readable line
    schema.py      the tables, PRAGMA user_version, migrations; their PostgreSQL twins (PG_STEPS)
    connection.py  open_database (WAL, busy timeout, migrate; read-only never creates), transaction
    location.py    what --db names: a SQLite file or a postgresql:// URL; where side files go
    dialect.py     the package's SQLite dialect rewritten for PostgreSQL (statements and DDL)
    postgres.py    PgConnection: psycopg 3 behind the sqlite3 surface the stores use; the write lock
    registry.py    principals: Role, Principal, PrincipalStore; quotas: QuotaStore
    ingest.py      the writer's tables: IngestStore
    presence.py    devices and presence events: PresenceStore
    commands.py    commands and their history: CommandStore, CommandRecord
    status.py      hub heartbeats and worker adoptions: StatusStore
    firmware.py    firmware images and staged rollouts: FirmwareStore
    config.py      device configuration, descriptions, range flags: ConfigStore
    alarms.py      alarm rules, alarms and their history: AlarmStore
    queries.py     read queries of the CLI, the dashboard and the exporter
    values.py      reading values packed losslessly into small integers
    rollups.py     per-minute and per-hour aggregates: Period, fold
"""

from hub.storage.commands import ACTIVE_STATES, CommandRecord, CommandStore, new_command_id
from hub.storage.config import ConfigStore, DeviceConfigRow, KeyRow
from hub.storage.connection import Connection, dict_rows, open_database, reading, transaction
from hub.storage.errors import StorageError
from hub.storage.firmware import FirmwareStore, ImageRow, RolloutDeviceRow, RolloutRow
from hub.storage.ingest import GapRow, IngestStore, StreamRow
from hub.storage.presence import DeviceLinkRow, DeviceRow, PresenceStore
from hub.storage.registry import QUOTA_FIELDS, Principal, PrincipalStore, QuotaStore, Role
from hub.storage.rollups import Period
from hub.storage.schema import CURRENT_VERSION
from hub.storage.status import Heartbeat, StatusStore

__all__ = [
    "ACTIVE_STATES",
    "CURRENT_VERSION",
    "CommandRecord",
    "CommandStore",
    "ConfigStore",
    "Connection",
    "DeviceConfigRow",
    "KeyRow",
    "DeviceLinkRow",
    "DeviceRow",
    "FirmwareStore",
    "ImageRow",
    "RolloutDeviceRow",
    "RolloutRow",
    "GapRow",
    "Heartbeat",
    "IngestStore",
    "Period",
    "PresenceStore",
    "Principal",
    "PrincipalStore",
    "QUOTA_FIELDS",
    "QuotaStore",
    "Role",
    "StatusStore",
    "StorageError",
    "StreamRow",
    "dict_rows",
    "new_command_id",
    "open_database",
    "reading",
    "transaction",
]
