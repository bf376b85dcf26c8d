"""Every `fleet` command fails in ONE readable line with its own exit code, for each condition we can name.

The matrix runs the real `fleet` command (click's CliRunner, in-process, so that a cell costs
milliseconds rather than an interpreter start on a loaded machine; a few cells run the console
script in a subprocess too): each command x each condition (not a database, missing folder,
read-only folder, no database yet, port in use, broker not reachable, wrong broker URL, hub not
running, unknown device, unknown command id, bad flag values). Each cell asserts the exit code,
exactly one line on stderr, no traceback, and that a read-only command left no fleet.db behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.registry import Registry, Role
from broker.server import free_port

FLEET = [sys.executable, "-c", "from cli.main import main; main()"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str

# exit codes (cli/errors.py, README "Exit codes")
USAGE, NOT_FOUND, DATABASE, BROKER, HUB, CANNOT_LISTEN = 2, 8, 9, 10, 11, 12


def fleet_process(cwd: Path, *args: str, timeout: float = 120) -> Outcome:
    """The console script in a subprocess, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    res = subprocess.run([*FLEET, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**env, "COLUMNS": "80", "PYTHONPATH": str(ROOT)})
    return Outcome(res.returncode, res.stdout, res.stderr)


def fleet(cwd: Path, *args: str) -> Outcome:
    """`fleet ARGS` run in folder ``cwd`` through click's CliRunner (the same entry point as the script)."""
    from click.testing import CliRunner

    from cli.main import cli

    old = Path.cwd()
    os.chdir(cwd)
    try:
        env = {k: None for k in os.environ if k.startswith("FLEET_")}
        res = CliRunner().invoke(cli, list(args), env={**env, "COLUMNS": "80"})
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(res.exception)))
    return Outcome(res.exit_code, res.stdout, res.stderr)


def assert_one_line(res: Outcome, code: int) -> None:
    lines = res.stderr.splitlines()
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert res.returncode == code, f"exit {res.returncode}, expected {code}: {res.stderr}"


def dead_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


# ------------------------------------------------------------------ the commands

@dataclass(frozen=True)
class Cmd:
    name: str
    args: Callable[[str], list[str]]  # broker URL -> arguments after --db
    read_only: bool = False
    uses_broker: bool = False


def _cmds() -> list[Cmd]:
    return [
        Cmd("devices list", lambda b: ["devices", "list"], read_only=True),
        Cmd("devices add", lambda b: ["devices", "add", "dev-new"]),
        Cmd("devices revoke", lambda b: ["devices", "revoke", "dev-1"]),
        Cmd("readings", lambda b: ["readings", "dev-1"], read_only=True),
        Cmd("commands", lambda b: ["commands"], read_only=True),
        Cmd("commands show", lambda b: ["commands", "show", "c0"], read_only=True),
        Cmd("deadletters", lambda b: ["deadletters"], read_only=True),
        Cmd("export", lambda b: ["export"], read_only=True),
        Cmd("status", lambda b: ["status", "--broker", b], read_only=True, uses_broker=True),
        Cmd("send", lambda b: ["send", "dev-1", "ping", "--broker", b], uses_broker=True),
        Cmd("hub", lambda b: ["hub", "--broker", b], uses_broker=True),
        Cmd("sim", lambda b: ["sim", "--devices", "1", "--duration", "1", "--broker", b], uses_broker=True),
        Cmd("broker", lambda b: ["broker", "--port", str(dead_port())]),
        Cmd("up", lambda b: ["up", "--no-dashboard", "-n", "1", "--port", str(dead_port())]),
    ]


CMDS = {c.name: c for c in _cmds()}


def good_db(folder: Path) -> Path:
    db = folder / "fleet.db"
    Registry(db).add("dev-1", Role.DEVICE)
    return db


# ------------------------------------------------------------------ database conditions x every command

def _garbage(folder: Path) -> Path:
    db = folder / "fleet.db"
    db.write_text("garbage\n" * 100)
    return db


def _missing_folder(folder: Path) -> Path:
    return folder / "no-such-dir" / "fleet.db"


DB_CONDITIONS: dict[str, Callable[[Path], Path]] = {"not a database": _garbage, "missing folder": _missing_folder}


@pytest.mark.parametrize("condition", list(DB_CONDITIONS))
@pytest.mark.parametrize("cmd", list(CMDS))
def test_database_condition_is_one_line(tmp_path: Path, cmd: str, condition: str) -> None:
    db = DB_CONDITIONS[condition](tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = fleet(tmp_path, "--db", str(db), *CMDS[cmd].args(f"mqtt://127.0.0.1:{dead_port()}"))
    assert_one_line(res, DATABASE)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing created or changed beside the database"


@pytest.mark.parametrize("cmd", ["devices list", "send", "broker"])
def test_console_script_says_not_a_database_in_one_line(tmp_path: Path, cmd: str) -> None:
    db = _garbage(tmp_path)
    res = fleet_process(tmp_path, "--db", str(db), *CMDS[cmd].args(f"mqtt://127.0.0.1:{dead_port()}"))
    assert_one_line(res, DATABASE)


@pytest.mark.parametrize("cmd", [c.name for c in CMDS.values() if c.read_only])
def test_read_only_command_in_an_empty_folder_creates_no_database(tmp_path: Path, cmd: str) -> None:
    res = fleet(tmp_path, *CMDS[cmd].args(f"mqtt://127.0.0.1:{dead_port()}"))
    assert_one_line(res, DATABASE)
    assert "no database at fleet.db" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding a good fleet.db that cannot be written: a read-only bind mount (root), else chmod."""
    src = tmp_path / "src"
    src.mkdir()
    good_db(src)
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode == 0
    if mounted:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode != 0:
            subprocess.run(["umount", str(ro)], check=True)
            pytest.skip("cannot make a read-only mount here")
        try:
            yield ro
        finally:  # lazy: the test process may still hold the database open
            subprocess.run(["umount", "-l", str(ro)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions and cannot mount here")
    src.chmod(0o555)
    try:
        yield src
    finally:
        src.chmod(0o755)


@pytest.mark.parametrize("cmd", ["devices add", "devices revoke", "send", "hub", "sim"])
def test_writing_command_in_a_read_only_folder_is_one_line(read_only_folder: Path, cmd: str) -> None:
    res = fleet(read_only_folder, *CMDS[cmd].args(f"mqtt://127.0.0.1:{dead_port()}"))
    assert_one_line(res, DATABASE)
    assert "read-only" in res.stderr.lower() or "cannot" in res.stderr.lower()


@pytest.mark.parametrize("cmd", [c.name for c in CMDS.values() if c.read_only and c.name not in ("status", "commands show")])
def test_read_only_command_in_a_read_only_folder_reads(read_only_folder: Path, cmd: str) -> None:
    res = fleet(read_only_folder, *CMDS[cmd].args("unused"))
    assert res.returncode == 0 and "Error" not in res.stderr, res.stderr


def test_unknown_command_id_in_a_read_only_folder_is_not_found(read_only_folder: Path) -> None:
    assert_one_line(fleet(read_only_folder, "commands", "show", "c0"), NOT_FOUND)


# ------------------------------------------------------------------ network conditions

@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("args", [["broker", "--port"], ["up", "--no-dashboard", "-n", "1", "--port"]],
                         ids=["broker", "up"])
def test_port_in_use_is_one_line(tmp_path: Path, busy_port: int, args: list[str]) -> None:
    good_db(tmp_path)
    res = fleet(tmp_path, *args, str(busy_port))
    assert_one_line(res, CANNOT_LISTEN)
    assert "address already in use" in res.stderr


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:{dead}", "garbage://x", "mqtt://127.0.0.1:99999", "mqtt://no-such-host.invalid:1883"],
                         ids=["unreachable", "bad scheme", "bad port", "unknown host"])
@pytest.mark.parametrize("cmd", ["send", "sim", "hub"])
def test_broker_not_usable_is_one_line(tmp_path: Path, cmd: str, url: str) -> None:
    good_db(tmp_path)
    res = fleet(tmp_path, *CMDS[cmd].args(url.format(dead=dead_port())))
    assert_one_line(res, BROKER)
    if cmd == "send":
        assert "nothing was sent" in res.stderr or "broker URL" in res.stderr or "not found" in res.stderr


@pytest.mark.parametrize("url", ["garbage", "mqtt://127.0.0.1:{dead}"])
def test_status_says_why_the_broker_fails(tmp_path: Path, url: str) -> None:
    good_db(tmp_path)
    res = fleet(tmp_path, "status", "--broker", url.format(dead=dead_port()))
    assert res.returncode == 1 and res.stderr == ""
    broker_line = res.stdout.splitlines()[0]
    assert ("host 'garbage' not found" in broker_line) or ("Connection refused" in broker_line), res.stdout


def test_hub_not_running_says_what_state_the_request_is_in(embedded_broker, db_path: Path) -> None:  # type: ignore[no-untyped-def]
    Registry(db_path).add("dev-1", Role.DEVICE)
    res = fleet_process(db_path.parent, "send", "dev-1", "ping", "--ttl", "1m", "--request-id", "r-nohub",
                "--broker", f"mqtt://127.0.0.1:{embedded_broker.port}")
    assert_one_line(res, HUB)
    assert "is `fleet hub` running?" in res.stderr and "runs only if the hub takes it before" in res.stderr
    assert "--request-id r-nohub" in res.stderr


# ------------------------------------------------------------------ unknown names and bad flags

@pytest.mark.parametrize("args,code", [
    (["readings", "nosuch"], NOT_FOUND),
    (["commands", "nosuch-dev"], NOT_FOUND),
    (["commands", "show", "cffff"], NOT_FOUND),
    (["devices", "revoke", "nosuch"], NOT_FOUND),
    (["export", "--device", "nosuch"], NOT_FOUND),
    (["commands", "--state", "bogus"], USAGE),
    (["deadletters", "--reason", "nosuch"], USAGE),
    (["commands", "--limit", "-1"], USAGE),
    (["readings", "dev-1", "--limit", "-1"], USAGE),
    (["send", "dev-1", "ping", "--ttl", "3650d"], USAGE),
    (["send", "dev-1", "ping", "--ttl", "0"], USAGE),
    (["send", "--all", "--group", "sim", "ping"], USAGE),
    (["readings", "dev-1", "--since", "yesterday"], USAGE),
], ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_unknown_name_or_bad_flag_is_one_line(tmp_path: Path, args: list[str], code: int) -> None:
    good_db(tmp_path)
    res = fleet(tmp_path, *args)
    assert_one_line(res, code)
    assert res.stdout == ""
    if "--ttl" in args and "3650d" in args:
        assert "at most 1d" in res.stderr
