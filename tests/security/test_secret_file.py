"""Local secret files: several processes starting at once on one database agree on one secret."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

from broker.credentials import read_or_create_secret
from hub.config import HubSettings, hub_password


def _race(db: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.queues.Queue) -> None:  # type: ignore[name-defined]
    barrier.wait()
    try:
        out.put(hub_password(HubSettings(db=Path(db))))
    except Exception as exc:  # reported to the test, which fails on it
        out.put(f"error: {exc!r}")


def test_processes_starting_together_read_one_whole_secret(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db.hub-secret"  # the hub's: what a worker group's members race for
    ctx = multiprocessing.get_context("spawn")  # not fork: other tests leave threads (and their locks) in this process
    n = 8
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "fleet.db"), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert len(set(got)) == 1 and not got[0].startswith("error"), got
    assert len(got[0]) >= 32
    assert path.read_text().strip() == got[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no private leftovers


def test_a_secret_file_is_read_back_and_its_folder_made(tmp_path: Path) -> None:
    path = tmp_path / "new" / "fleet.db.sim-secret"
    first = read_or_create_secret(path)
    assert read_or_create_secret(path) == first == path.read_text().strip()


def test_the_hub_reads_the_secret_file_it_made(tmp_path: Path) -> None:
    settings = HubSettings(db=tmp_path / "sub" / "fleet.db")
    first = hub_password(settings)
    assert settings.secret_file.read_text().strip() == first
    assert hub_password(settings) == first
