"""A long-lived CLI service (`fleet broker`, `fleet hub`, `fleet sim`) runs with the collector tuned
for thousands of live connections (why: bench/README.md, "10,000 devices")."""

from __future__ import annotations

import asyncio
import gc

from cli.runtime import GC_THRESHOLDS, run_service


def test_a_service_runs_with_start_up_objects_frozen_and_young_collections_rarer() -> None:
    before = gc.get_threshold()
    # from CPython's defaults: an earlier test may have run a service (`fleet broker`) in this process
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    seen: dict[str, object] = {}

    async def main(stop: asyncio.Event) -> None:
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()

    try:
        run_service(main)
    finally:  # leave the collector as this test process had it
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen["threshold"] == GC_THRESHOLDS
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # the imported modules' objects at least
