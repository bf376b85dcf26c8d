"""Running long-lived async services from the CLI: one event loop, clean stop on Ctrl-C and SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from protocol.text import inert


def setup_logging(level: str = "INFO", file: str | None = None) -> None:
    """Structured logs on stderr, or appended to ``file`` (text on a terminal, JSON lines otherwise)."""
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    if (sys.stderr.isatty() and not file) or os.environ.get("FLEET_LOG_FORMAT") == "text":
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # amqtt logs every connection at INFO; keep our own lines readable
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, root.level))
    # amqtt logs a failed bind with a traceback before raising it; the CLI says it in one line instead
    broker_log = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _StartupFailureFilter) for f in broker_log.filters):
        broker_log.addFilter(_StartupFailureFilter())
    logging.getLogger("transitions").setLevel(logging.WARNING)


class _StartupFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Broker startup failed"


class _TextFormatter(logging.Formatter):
    """Log lines carry device-supplied text (client ids, topics, details): escape it before a terminal sees it."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return inert(super().formatMessage(record))


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; json.dumps escapes every control character, so device text stays inert."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        data = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


# Generation thresholds for a process that holds thousands of connections (measured in
# bench/README.md, "10,000 devices"). With CPython's defaults (700, 10, 10) the embedded broker
# spent 27.5 s of its 56.8 s of CPU in the cyclic collector while 10,000 devices connected: each
# full collection walked the million objects that live connections own (0.84 s each, 23 of them),
# and 10,000 did not all connect within 60 s. With these, the same run spent 2 s in it and every
# device was connected in 18.5 s. Young cycles are still collected, only less often; a full
# collection still runs once the long-lived objects grow by a quarter (CPython's own rule).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Set the collector for a `fleet` process: objects made at start-up are frozen (never walked
    again) and young generations collected every 50,000 allocations instead of 700.

    Called by the console script's entry point (:func:`cli.main.main`), which owns the process;
    not by the commands themselves, which tests also run inside a pytest process."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


NOFILE_CAP = 1 << 20
"""The most open files asked for when the hard limit is unlimited (Linux refuses more than its nr_open)."""


def raise_nofile() -> None:
    """Lift this process's soft open-files limit to its hard one: a broker or a simulator holds one socket per
    device, and many systems start programs with a soft limit of 1024 (systemd does) under a hard limit hundreds
    of times higher, which the program is meant to ask for itself. Nothing changes when that is refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass  # a container may cap it lower than it says: keep the soft limit we have


def run_service(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on a fresh event loop; SIGINT/SIGTERM set ``stop`` for a clean shutdown."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
