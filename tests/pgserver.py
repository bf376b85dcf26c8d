"""A private PostgreSQL server for the tests: initdb in a temp folder, a free port, its socket in that folder.

Never the system service: the distribution's binaries (``/usr/lib/postgresql/*/bin``, installed by
.ci/run) run a throw-away cluster that lives as long as the test session. PostgreSQL refuses to run
as root, so under root (CI containers) the server runs as the ``postgres`` user the package created.
Each test gets a database of its own (``CREATE DATABASE``), so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from broker.server import free_port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (with initdb and pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One throw-away cluster; :meth:`new_database` hands out fresh databases as ``postgresql://`` URLs."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = free_port()
        self.user = "fleet"
        self._n = itertools.count(1)
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            pw = pwd.getpwnam("postgres")
            self._run_as = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.sock.mkdir()
        if self._run_as:
            os.chown(self.sock, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)

    def _cmd(self, *args: str) -> list[str]:
        return [*self._run_as, *args]

    def start(self, *, durable: bool = False, extra_conf: str = "") -> PostgresServer:
        """initdb (trust auth on the socket and loopback) and start; returns once it accepts connections.

        ``durable``: PostgreSQL's default durability (fsync, full page writes) for benchmarks; the tests
        run without fsync (a test cluster never outlives a crash of the machine)."""
        subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                                 "-E", "UTF8", "--no-sync"), check=True, capture_output=True)
        # fsync off: a test cluster never survives a crash of the machine anyway (the hub's own
        # durability is the server's business); faster on a busy 2-core machine
        conf = (f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sock}'\n"
                "max_connections = 200\nshared_buffers = 128MB\n"
                + ("" if durable else "fsync = off\nfull_page_writes = off\n") + extra_conf)
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(conf)
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                 "-w", "-t", "60", "start"), check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run([str(self.bindir / "pg_isready"), "-h", str(self.sock), "-p", str(self.port)],
                                capture_output=True)
            if ok.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"private PostgreSQL did not start: {(self.root / 'log').read_text()}")

    def url(self, dbname: str) -> str:
        """A URL for ``--db``: user, database, and the socket folder as the host."""
        return f"postgresql://{self.user}@/{dbname}?host={self.sock}&port={self.port}"

    def tcp_url(self, dbname: str) -> str:
        """The same database over TCP on 127.0.0.1 (what a worker on another machine would use)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"fleet_{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


BACKENDS = ("sqlite", "postgresql")
"""The storage backends the ingest, commands, reliability and scale-out suites run against (their
conftest overrides ``db_path`` with :func:`backend_db_path`)."""


def backend_db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """``db_path`` for a test parametrized over :data:`BACKENDS`."""
    if request.param == "postgresql":
        # side files (secrets) of a PostgreSQL database go to the working folder: the test's own
        request.getfixturevalue("monkeypatch").chdir(tmp_path)
        return Path(request.getfixturevalue("postgres_server").new_database())
    return tmp_path / "fleet.db"
