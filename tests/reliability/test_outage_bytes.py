"""Re-sends only when they help (firmware_protocol.md 5.3): uplink bytes per stored reading stay
within 1.1x of a clean run through a hub outage, 1 in 20 messages dead-lettered and a buffer
that overflows. (bench/outage_bytes.py prints the same figures at full scale: 60 s outage, 1%.)

No timing is asserted: only bytes and counts. Before contract v2 the devices re-sent on timers
while the broker held their messages, and re-sent everything above a dead letter until reboot.
"""

from __future__ import annotations

from pathlib import Path

from bench.outage_bytes import Scenario, run_pair


def test_uplink_bytes_per_stored_reading_stay_within_ten_percent_of_a_clean_run(tmp_path: Path) -> None:
    sc = Scenario(devices=4, rate=5.0, before_s=2.0, outage_s=4.0, after_s=5.0, dead_every=20, buffer_size=10)
    clean, faulty = run_pair(sc, tmp_path)
    print(f"clean {clean} {clean.bytes_per_reading:.2f} B/reading; faulty {faulty} "
          f"{faulty.bytes_per_reading:.2f} B/reading")
    assert faulty.overflowed > 0 and faulty.deadletters > 0, faulty  # the faults really happened
    assert clean.resent == 0 and clean.deadletters == 0
    assert faulty.bytes_per_reading <= 1.1 * clean.bytes_per_reading, (faulty, clean)
