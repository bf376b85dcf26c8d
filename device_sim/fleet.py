"""A fleet of simulated devices on one asyncio event loop, and its provisioning.

``Fleet(settings, credentials)`` holds N :class:`~device_sim.device.SimDevice` tasks on the
running loop (no thread per device). ``await fleet.run(stop)`` runs until ``stop`` is set
or ``settings.duration`` passes and returns a :class:`SimSummary`; or use ``start()`` and
``await stop()`` around your own code (tests do).

Provisioning: :func:`provision` makes sure devices ``<prefix>-00001``... exist in the
registry and that their secrets are known, in a credentials file next to the database
(``<db>.sim-creds.json``, mode 0600). The registry stores generated secrets as fast keyed
hashes (``broker/secrets.py``); new devices are still registered in a thread pool. The file
also keeps each device's boot counter, so that a rerun starts a new boot rather than
replaying seq numbers of an old one.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker.registry import Registry, Role
from device_sim.device import FleetStats, SimDevice
from device_sim.faults import FaultKind, assign_faults
from device_sim.ota import OtaPlan
from device_sim.ledger import Ledger
from device_sim.settings import SimSettings
from device_sim.signals import make_signal, profile_for
from hub.storage.location import side_base
from protocol.text import inert

log = logging.getLogger("fleet.sim")


def device_id(prefix: str, index: int) -> str:
    """The id of device number ``index`` (1-based): ``sim-00001``."""
    return f"{prefix}-{index:05d}"


def credentials_path(db: str | Path) -> Path:
    """Where the simulator keeps its device secrets for database ``db``."""
    base = side_base(db)  # beside a SQLite file; in the working folder for PostgreSQL
    return base.with_name(base.name + ".sim-creds.json")


@dataclass
class DeviceCreds:
    secret: str
    boot: int = 0


class Credentials:
    """The simulator's secrets and boot counters, in a JSON file readable only by its owner.

    Several processes share the file (``fleet up`` and a ``fleet sim`` beside it, each with its
    own devices), so :meth:`save` merges: under an exclusive lock it re-reads the file, lays this
    process's devices over it (the higher boot counter wins) and replaces it atomically. Devices
    another process added survive.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.devices: dict[str, DeviceCreds] = _read_credentials(path)
        self._seen = {k: (v.secret, v.boot) for k, v in self.devices.items()}
        """What the file held when last read: entries this process did not change are taken from the file."""

    def save(self) -> None:
        """Merge this process's devices into the file, under a lock, atomically, with mode 0600."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            merged = _read_credentials(self.path)
            for dev, mine in self.devices.items():
                theirs = merged.get(dev)
                if self._seen.get(dev) == (mine.secret, mine.boot):  # not changed here: the file's version stands
                    if theirs is not None:
                        mine.secret, mine.boot = theirs.secret, theirs.boot
                    continue
                if theirs is not None and theirs.secret == mine.secret:
                    mine.boot = max(mine.boot, theirs.boot)
                merged[dev] = DeviceCreds(mine.secret, mine.boot)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"devices": {k: asdict(v) for k, v in merged.items()}}, fh)
            os.replace(tmp, self.path)
            self._seen = {k: (v.secret, v.boot) for k, v in merged.items()}
        finally:
            os.close(lock_fd)  # releases the lock


def _read_credentials(path: Path) -> dict[str, DeviceCreds]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {k: DeviceCreds(**v) for k, v in data.get("devices", {}).items()}


def provision(db: str | Path, ids: list[str], *, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Credentials:
    """Make sure every id in ``ids`` is an active device whose secret is in the credentials file.

    A device missing from the registry, revoked, or without a known secret gets a new secret
    (``replace=True``). ``progress(done, total)`` is called as devices are created.
    """
    creds = Credentials(credentials_path(db))
    registry = Registry(db)
    existing = {p.id: p for p in registry.list(role=Role.DEVICE)}
    todo = [i for i in ids if i not in creds.devices or i not in existing or not existing[i].active]
    total = len(todo)
    if progress:
        progress(0, total)
    if not todo:
        return creds
    local = threading.local()

    def add(dev: str) -> tuple[str, str]:
        # one registry connection per worker thread; SQLite serializes the short inserts
        if not hasattr(local, "registry"):
            local.registry = Registry(db)
        return dev, local.registry.add(dev, Role.DEVICE, group="sim", tags=("sim",), replace=True)

    done = 0
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
        for dev, secret in pool.map(add, todo):
            creds.devices[dev] = DeviceCreds(secret, creds.devices[dev].boot if dev in creds.devices else 0)
            done += 1
            if progress:
                progress(done, total)
            if done % 500 == 0:
                creds.save()  # an interrupted provisioning keeps what it made
    creds.save()
    return creds


@dataclass
class SimSummary:
    """What a simulator run did (the ``--json`` output of ``fleet sim``)."""

    devices: int
    duration_s: float
    connected_peak: int
    connected_at_end: int
    connects: int
    reconnects: int
    refused: int
    births: int
    messages: int
    publishes: int
    resent: int
    readings: int
    pubacks: int
    watermarked: int
    dropped: int
    errors: int
    bytes_out: int
    messages_per_s: float
    commands: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    """Messages given up after the maximum number of sends (firmware_protocol.md 5.3, R2)."""
    rebirths: int = 0
    ota: dict[str, int] = field(default_factory=dict)
    """Firmware updates: devices updated, rolled back, offers refused, chunks fetched again, resumes,
    and devices per OTA fault (``fault:<kind>``); empty while nothing happened."""


class Fleet:
    """N simulated devices on the running event loop."""

    def __init__(self, settings: SimSettings, credentials: Credentials,
                 fault_plan: dict[int, frozenset[FaultKind]] | None = None, ota: OtaPlan | None = None) -> None:
        """``fault_plan`` (device index -> faults) replaces the seeded choice from ``settings.faults``;
        ``ota`` sets the devices' firmware updater (chunk size, faults per device id)."""
        self.ota = ota
        self.settings = settings
        self.credentials = credentials
        self.stats = FleetStats()
        self.ledger = Ledger(settings.ledger)
        self.fault_plan = (fault_plan if fault_plan is not None
                           else assign_faults(settings.faults, settings.devices, settings.seed))
        self.devices: list[SimDevice] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._started = 0.0
        self._bytes_closed = 0

    def ids(self) -> list[str]:
        """The device ids of this fleet, in order."""
        s = self.settings
        return [device_id(s.prefix, s.first_index + i) for i in range(s.devices)]

    def faulty(self, kind: FaultKind) -> list[str]:
        """The ids of the devices that carry fault ``kind``."""
        return [d.device_id for d in self.devices if kind in d.faults]

    def device(self, dev_id: str) -> SimDevice:
        return next(d for d in self.devices if d.device_id == dev_id)

    async def start(self) -> None:
        """Create the devices and start their tasks (they connect gradually, see ``connect_concurrency``)."""
        s = self.settings
        gate = asyncio.Semaphore(s.connect_concurrency)
        for i, dev in enumerate(self.ids()):
            cred = self.credentials.devices.get(dev)
            if cred is None:
                raise KeyError(f"no credentials for {dev}: provision the fleet first")
            cred.boot += 1
            profile = profile_for(s.profile, i)
            self.devices.append(SimDevice(
                dev, i, cred.secret, profile, make_signal(profile, s.seed, i), s, cred.boot,
                self.stats, self.ledger, gate, self.fault_plan.get(i, frozenset()), self.ota))
        self.credentials.save()  # the new boot counters, before any message uses them
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(d.run(), name=d.device_id) for d in self.devices]
        self._flusher = asyncio.create_task(self._flush_ledger())

    async def _flush_ledger(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.ledger.flush()

    async def stop(self) -> SimSummary:
        """Switch every device off cleanly (offline status, DISCONNECT) and return the summary."""
        tasks = [*self._tasks, *([self._flusher] if self._flusher else [])]
        pending: set[asyncio.Task[None]] = set(tasks)
        # cancel again whatever is still running a second later: a cancel can be lost (a library's
        # wait that drops it, as asyncio.wait_for does on 3.11), and one such device must not hang
        # the stop of the whole fleet
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        # a task that died before the stop is a bug in the simulator: say so once per kind, not per device
        died = Counter(f"{type(exc).__name__}: {exc}" for t in tasks
                       if not t.cancelled() and (exc := t.exception()) is not None)
        for what, n in died.items():
            log.error("simulated device tasks died devices=%d error=%s", n, inert(what))
        for d, cred in zip(self.devices, (self.credentials.devices[d.device_id] for d in self.devices), strict=True):
            cred.boot = max(cred.boot, d.boot)
        self.credentials.save()
        summary = self.summary()
        await asyncio.sleep(0.1)  # let the transports flush their goodbyes
        self.ledger.close()
        return summary

    def summary(self) -> SimSummary:
        """A snapshot of the counters."""
        st = self.stats
        elapsed = max(time.monotonic() - self._started, 1e-9) if self._started else 0.0
        bytes_out = sum(d.bytes_out for d in self.devices)
        return SimSummary(
            devices=len(self.devices), duration_s=round(elapsed, 3), connected_peak=st.connected_peak,
            connected_at_end=st.connected, connects=st.connects, reconnects=st.reconnects, refused=st.refused,
            births=st.births, messages=st.messages, publishes=st.publishes, resent=st.resent,
            readings=st.readings, pubacks=st.pubacks, watermarked=st.watermarked, dropped=st.dropped,
            errors=st.errors, bytes_out=bytes_out,
            messages_per_s=round(st.messages / elapsed, 1) if elapsed else 0.0,
            commands=dict(st.commands), faults=dict(st.faults), abandoned=st.abandoned, rebirths=st.rebirths,
            ota=self._ota_summary())

    def _ota_summary(self) -> dict[str, int]:
        out: dict[str, int] = {}

        def add(key: str, n: int) -> None:
            if n:
                out[key] = out.get(key, 0) + n

        for d in self.devices:
            agent, c = d.ota, d.ota.counters
            add("updated", int(agent.running != self.settings.fw))
            add("rolled_back", c.rolled_back)
            add("refused", len(c.refused))
            add("refetched", c.refetched)
            add("resumed", len(c.resumed_at))
            for kind in agent.faults:
                add(f"fault:{kind.value}", 1)
        return out

    async def run(self, stop: asyncio.Event, on_tick: Callable[[SimSummary], None] | None = None) -> SimSummary:
        """Run until ``stop`` is set or the duration passes; ``on_tick`` gets a summary twice a second."""
        await self.start()
        deadline = None if self.settings.duration is None else time.monotonic() + self.settings.duration
        try:
            while not stop.is_set():
                timeout = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if timeout <= 0:
                    break
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: see mqtt.py
                        await stop.wait()
                except TimeoutError:
                    pass
                if on_tick is not None:
                    on_tick(self.summary())
        finally:
            summary = await self.stop()
        return summary
