"""What ``--db`` / ``FLEET_DB`` names: a SQLite file (the default) or a PostgreSQL database (a URL).

The CLI and the settings carry ``db`` as a :class:`~pathlib.Path`, and ``Path`` folds the ``//``
of a URL (``postgresql://u@h/db`` becomes ``postgresql:/u@h/db``); :func:`postgres_url` gives the
URL back, so every layer above the storage package keeps passing one value around.

Files a process keeps beside its database (the hub's secret, local principals' secrets, the
simulator's credentials) sit next to a SQLite file; with PostgreSQL there is no file, so they
sit in the working folder of the process, named after the database (:func:`side_base`): each
machine of a deployment keeps its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^(postgres(?:ql)?):/+", re.I)


def postgres_url(db: str | Path) -> str | None:
    """The ``postgresql://`` URL ``db`` names, or None for a SQLite file."""
    text = str(db)
    m = _SCHEME.match(text)
    if m is None:
        return None
    rest = text[m.end():]
    return f"{m.group(1).lower()}://{rest}"


def is_postgres(db: str | Path) -> bool:
    """True when ``db`` names a PostgreSQL database."""
    return postgres_url(db) is not None


def display_name(db: str | Path) -> str:
    """``db`` as shown to people: a file path, or the URL without its password."""
    url = postgres_url(db)
    if url is None:
        return str(db)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def database_name(db: str | Path) -> str:
    """The PostgreSQL database's name (``fleet`` when the URL names none), or the file's name."""
    url = postgres_url(db)
    if url is None:
        return Path(db).name
    name = urlsplit(url).path.lstrip("/")
    return name or "fleet"


def side_base(db: str | Path) -> Path:
    """The path that side files are named after: the SQLite file itself, or ``./<dbname>`` in the working
    folder for PostgreSQL (so ``side_base(db).with_name(side_base(db).name + ".hub-secret")`` works for both)."""
    if postgres_url(db) is None:
        return Path(db)
    return Path.cwd() / database_name(db)
