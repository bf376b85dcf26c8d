"""The SQLite dialect of the storage package turned into PostgreSQL's (pure text; no driver imported here).

The stores are written once, in SQLite's SQL. :func:`to_postgres` rewrites a statement for psycopg:

    ?                              -> %s (and a literal % -> %%)
    INSERT OR IGNORE INTO t ...    -> INSERT INTO t ... ON CONFLICT DO NOTHING
    INSERT OR REPLACE INTO t (c..) -> INSERT INTO t (c..) ... ON CONFLICT (key of t) DO UPDATE SET c = EXCLUDED.c
    MAX(a, b) / MIN(a, b)          -> GREATEST(a, b) / LEAST(a, b)  (the aggregates, one argument, stay)
    hex(x)                         -> upper(encode(x, 'hex'))
    ... DO UPDATE SET n = n + 1    -> ... DO UPDATE SET n = t.n + 1  (PostgreSQL finds a bare column ambiguous)

(``BEGIN IMMEDIATE`` is the connection's business: it takes the write lock, see hub/storage/postgres.py.)

:func:`ddl_to_postgres` does the same for the schema's DDL, so a migration's PostgreSQL twin is
usually its SQLite DDL passed through it (see ``PG_STEPS`` in :mod:`hub.storage.schema`).
What cannot be spelled the same (``typeof``, ``PRAGMA``, ``sqlite_master``, ``lastrowid``) is
written per dialect where it is used (``getattr(conn, "dialect", "sqlite")``).
"""

from __future__ import annotations

import re
from typing import Any

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


def dialect_of(conn: Any) -> str:
    """``"postgresql"`` for a :class:`hub.storage.postgres.PgConnection`, else ``"sqlite"``."""
    return getattr(conn, "dialect", SQLITE)


def is_pg(conn: Any) -> bool:
    """True when ``conn`` is a PostgreSQL connection of this package."""
    return dialect_of(conn) == POSTGRESQL


PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "principals": ("id",),
    "hub_status": ("worker",),
    "devices": ("device_id",),
    "quotas": ("subject",),
}
"""The conflict target of ``INSERT OR REPLACE`` per table (SQLite replaces on any unique key; these
tables have one)."""


# ---------------------------------------------------------------------------------------- dialect


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the call whose ``(`` is at ``start``; and the index after ``)``."""
    depth, args, cur, i = 0, [], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                args.append("".join(cur))
                return args, i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    raise ValueError(f"unbalanced parentheses in {text!r}")


_SCALAR = re.compile(r"\b(MAX|MIN|hex)\(", re.I)


def _scalar_functions(sql: str) -> str:
    out, pos = [], 0
    while (m := _SCALAR.search(sql, pos)) is not None:
        args, end = _split_args(sql, m.end() - 1)
        inner = [_scalar_functions(a) for a in args]
        name = m.group(1).upper()
        out.append(sql[pos:m.start()])
        if name == "HEX":
            out.append(f"upper(encode({inner[0]}, 'hex'))")
        elif len(args) > 1:
            out.append(("GREATEST(" if name == "MAX" else "LEAST(") + ",".join(inner) + ")")
        else:
            out.append(f"{m.group(1)}({inner[0]})")
        pos = end
    out.append(sql[pos:])
    return "".join(out)


_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s+", re.I)
_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+", re.I)
_TABLE_COLUMNS = re.compile(r"^(\w+)\s*\(([^)]*)\)")
_RETURNING = re.compile(r"\sRETURNING\s", re.I)


def _append_conflict(sql: str, clause: str) -> str:
    m = _RETURNING.search(sql)
    if m is None:
        return f"{sql} {clause}"
    return f"{sql[:m.start()]} {clause}{sql[m.start():]}"


_INSERT_TABLE = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.I)
_DO_UPDATE = re.compile(r"\bDO\s+UPDATE\s+SET\s", re.I)
_SET_END = re.compile(r"\s(WHERE|RETURNING)\s", re.I)
_WORD = re.compile(r"(?<![.\w%])([A-Za-z_]\w*)\b(?!\s*[.(])")
_SQL_WORDS = {"case", "when", "then", "else", "end", "and", "or", "not", "null", "is", "in", "excluded", "true",
              "false", "between", "like", "cast", "as", "integer", "bigint", "real", "text", "distinct", "s"}


def _top_level_split(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _qualify_upsert(sql: str) -> str:
    """Qualify the bare column names on the right of ``DO UPDATE SET col = ...`` with the target table."""
    target = _INSERT_TABLE.match(sql)
    m = _DO_UPDATE.search(sql)
    if target is None or m is None:
        return sql
    table = target.group(1)
    end = _SET_END.search(sql, m.end())
    stop = end.start() if end else len(sql)
    items = []
    for item in _top_level_split(sql[m.end():stop]):
        lhs, eq, rhs = item.partition("=")
        if eq:
            rhs = _WORD.sub(lambda w: w.group(1) if w.group(1).lower() in _SQL_WORDS else f"{table}.{w.group(1)}", rhs)
        items.append(lhs + eq + rhs)
    return sql[:m.end()] + ",".join(items) + sql[stop:]


def to_postgres(sql: str) -> str:
    """``sql`` (the storage package's SQLite dialect) in PostgreSQL's dialect, for psycopg."""
    out = sql.replace("%", "%%").replace("?", "%s")
    if (m := _OR_REPLACE.match(out)) is not None:
        rest = out[m.end():]
        target = _TABLE_COLUMNS.match(rest)
        if target is None:
            raise ValueError(f"INSERT OR REPLACE needs a column list: {sql!r}")
        table, cols = target.group(1), [c.strip() for c in target.group(2).split(",")]
        key = PRIMARY_KEYS[table]
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in key)
        out = _append_conflict("INSERT INTO " + rest, f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")
    elif (m := _OR_IGNORE.match(out)) is not None:
        out = _append_conflict("INSERT INTO " + out[m.end():], "ON CONFLICT DO NOTHING")
    out = _qualify_upsert(out)
    return _scalar_functions(out)


_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT ROWID\s*$"), ")"),
    (re.compile(r"^(\s*value) NOT NULL", re.M), r"\1 DOUBLE PRECISION NOT NULL"),
)


_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I)

IDENTITY_TABLES: set[str] = set()
"""Tables whose ``id`` is SQLite's ``INTEGER PRIMARY KEY`` (an identity on PostgreSQL): an INSERT into one
gets ``RETURNING id`` there, so ``cursor.lastrowid`` works on both backends (filled by :func:`ddl_to_postgres`)."""


def returns_id(sql: str) -> bool:
    """True when ``sql`` is a single INSERT into an identity table without its own RETURNING (lastrowid wanted)."""
    m = _INSERT_TABLE.match(sql)
    return m is not None and m.group(1) in IDENTITY_TABLES and _RETURNING.search(sql) is None


def ddl_to_postgres(ddl: str) -> str:
    """A SQLite ``CREATE``/``ALTER`` statement of the schema as PostgreSQL DDL: 64-bit integers (SQLite's INTEGER
    holds 64 bits, PostgreSQL's 32), doubles (PostgreSQL's REAL is 32-bit), BYTEA, identity keys for
    ``INTEGER PRIMARY KEY``, no ``WITHOUT ROWID``. A packed ``samples.value`` (no declared type) is a
    plain double on PostgreSQL: readers unpack integers only (:func:`hub.storage.values.unpack`)."""
    out = ddl
    for pattern, repl in _TYPES:
        out = pattern.sub(repl, out)
    m = _CREATE_TABLE.match(out)
    if m is not None and re.search(r"\bid INTEGER PRIMARY KEY\b", ddl):
        IDENTITY_TABLES.add(m.group(1))
    if m is not None and "PRIMARY KEY" not in out.upper():
        # a table without a key is read "in insertion order" (ORDER BY ts, rowid): SQLite's rowid, as a column
        out = out[:m.end()] + "\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY," + out[m.end():]
    return out
