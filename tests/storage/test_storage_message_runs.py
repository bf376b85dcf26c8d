"""The exactly-once key kept as runs of seqs: duplicates found anywhere in a run, holes filled late,
each message's receive time and lag kept to the millisecond, and other writers' runs respected."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.store import HubStore
from hub.storage.runs import MAX_MESSAGES, Run, build_runs, message_meta

T0 = 1_790_000_000_000  # ms


def put(store: HubStore, seqs: list[int], device: str = "dev-1", boot: int = 1, step_ms: int = 1000,
        lag_ms: int = 40, kind: str = "t", skewed: bool = False) -> list[bool]:
    """Store the keys of messages ``seqs`` (message n received at T0 + n * step_ms) in one transaction."""
    with store.transaction():
        return [store.insert_message(device, boot, s, kind, T0 + s * step_ms - lag_ms, (T0 + s * step_ms) / 1000,
                                     skewed) for s in seqs]


def runs(db: Path, device_key: int = 1) -> list[tuple[int, int]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT first_seq, last_seq FROM message_runs WHERE device = ? ORDER BY boot, first_seq",
                            (device_key,)).fetchall()
    finally:
        conn.close()


def messages(db: Path) -> list[tuple[str, int, int, str, int, float, int]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT device_id, boot, seq, kind, ts, received_at, skewed FROM messages"
                            " ORDER BY device_id, boot, seq").fetchall()
    finally:
        conn.close()


def test_contiguous_seqs_share_one_row_and_every_duplicate_is_found(db_path: Path) -> None:
    store = HubStore(db_path)
    assert put(store, [1, 2, 3]) == [True] * 3
    assert put(store, [4, 5, 2, 5, 6]) == [True, True, False, False, True]  # a repeat in the run and in the batch
    store.close()
    assert runs(db_path) == [(1, 6)]
    store = HubStore(db_path)  # a new process: nothing cached, the file decides
    assert put(store, [1, 3, 6, 7]) == [False, False, False, True]
    store.close()
    assert runs(db_path) == [(1, 7)]


def test_a_late_message_fills_its_hole_and_merges_the_runs(db_path: Path) -> None:
    store = HubStore(db_path)
    assert put(store, [1, 2, 3, 5, 6, 8, 9]) == [True] * 7
    assert runs(db_path) == [(1, 3), (5, 6), (8, 9)]
    assert put(store, [4]) == [True]
    assert runs(db_path) == [(1, 6), (8, 9)]
    assert put(store, [4, 5, 8, 9, 1]) == [False] * 5
    assert put(store, [7, 10]) == [True, True]
    store.close()
    assert runs(db_path) == [(1, 10)]
    assert [m[2] for m in messages(db_path)] == list(range(1, 11))


def test_each_message_keeps_its_own_receive_time_lag_kind_and_skew(db_path: Path) -> None:
    store = HubStore(db_path)
    with store.transaction():
        for seq, (kind, skewed, received, lag) in enumerate(
                [("t", False, 0, 40), ("t", False, 1999, 41), ("a", False, 3500, 39), ("a", False, 3501, -7),
                 ("t", True, 5000, 86_400_000), ("t", True, 5100, 86_400_003), ("t", True, 90_000, 86_400_003)], 1):
            assert store.insert_message("dev-1", 7, seq, kind, T0 + received - lag, (T0 + received) / 1000, skewed)
    store.close()
    got = messages(db_path)
    assert [(m[2], m[3], m[6]) for m in got] == [(1, "t", 0), (2, "t", 0), (3, "a", 0), (4, "a", 0), (5, "t", 1),
                                                  (6, "t", 1), (7, "t", 1)]
    expected_received = [0, 1999, 3500, 3501, 5000, 5100, 90_000]
    expected_lag = [40, 41, 39, -7, 86_400_000, 86_400_003, 86_400_003]
    assert [m[5] for m in got] == [(T0 + r) / 1000 for r in expected_received]
    assert [m[4] for m in got] == [T0 + r - g for r, g in zip(expected_received, expected_lag)]
    # kind or skew changes start a run; so does a receive time beyond the run's 65.5 s
    assert runs(db_path) == [(1, 2), (3, 4), (5, 6), (7, 7)]


def test_a_late_message_does_not_merge_runs_when_only_part_of_the_next_one_fits(db_path: Path) -> None:
    """Merging is all or nothing: here the next run's later messages came more than 65.5 s after the first run's
    first one (their receive-time offsets do not fit), so the runs stay apart and each message keeps its times."""
    store = HubStore(db_path)
    assert put(store, [1, 2, 3], step_ms=1000) == [True] * 3
    assert put(store, list(range(5, 18)), step_ms=5000) == [True] * 13  # received T0 + 25 s ... T0 + 85 s
    assert put(store, [4], step_ms=1000) == [True]
    assert put(store, [4, 13, 14, 17]) == [False] * 4
    store.close()
    assert runs(db_path) == [(1, 4), (5, 17)]
    conn = sqlite3.connect(db_path)
    try:  # 4 bytes per message after a run's first: nothing of the refused merge is left in the first run
        assert conn.execute("SELECT length(offsets), 4 * (last_seq - first_seq) FROM message_runs"
                            " WHERE first_seq = 1").fetchone() == (12, 12)
    finally:
        conn.close()
    received = {seq: at for _, _, seq, _, _, at, _ in messages(db_path)}
    assert received == {s: (T0 + s * (1000 if s < 5 else 5000)) / 1000 for s in range(1, 18)}


def test_a_run_holds_at_most_max_messages() -> None:
    built = build_runs(1, 1, [(s, 0, 0, T0 + s, 5) for s in range(1, 2 * MAX_MESSAGES + 2)])
    assert [(r.first, r.last) for r in built] == [(1, MAX_MESSAGES), (MAX_MESSAGES + 1, 2 * MAX_MESSAGES),
                                                  (2 * MAX_MESSAGES + 1, 2 * MAX_MESSAGES + 1)]
    run = built[0]
    stored = Run.from_row(run.row())
    assert [message_meta(stored.received, stored.lag, stored.first, stored.offsets, s)
            for s in range(1, MAX_MESSAGES + 1)] == [(T0 + s, 5) for s in range(1, MAX_MESSAGES + 1)]


def test_runs_another_writer_stored_are_seen(db_path: Path) -> None:
    """Workers of one group share the file: a store must not trust its cached runs after another commit."""
    first, second = HubStore(db_path), HubStore(db_path)
    assert put(first, [1, 2]) == [True, True]
    assert put(second, [3, 4]) == [True, True]  # second learns the stream from the file
    assert put(first, [3, 4, 5]) == [False, False, True]
    assert put(second, [5, 6]) == [False, True]
    first.close()
    second.close()
    assert runs(db_path) == [(1, 6)]


def test_a_rolled_back_batch_leaves_no_key(db_path: Path) -> None:
    store = HubStore(db_path)
    assert put(store, [1, 2]) == [True, True]
    try:
        with store.transaction():
            assert store.insert_message("dev-1", 1, 3, "t", T0, T0 / 1000, False)
            raise sqlite3.OperationalError("disk I/O error")
    except sqlite3.OperationalError:
        pass
    assert put(store, [3, 2]) == [True, False]
    store.close()
    assert runs(db_path) == [(1, 3)]


def test_uptime_stamps_corrected_in_the_runs(db_path: Path) -> None:
    store = HubStore(db_path)
    boot_ts = T0 - 3_600_000
    with store.transaction():
        for seq in range(1, 4):  # uptime stamps: ts is ms since power-up, flagged skewed until boot_ts is known
            uptime = 3_600_000 + seq * 1000
            assert store.insert_message("dev-1", 1, seq, "t", uptime, (boot_ts + uptime + 30) / 1000, True)
    with store.transaction():
        store.correct_uptime_stamps("dev-1", 1, boot_ts, 300)
    assert put(store, [1, 2, 3]) == [False] * 3
    store.close()
    got = messages(db_path)
    assert [(m[2], m[4], m[6]) for m in got] == [(s, boot_ts + 3_600_000 + s * 1000, 0) for s in range(1, 4)]


@st.composite
def arrivals(draw: st.DrawFn) -> list[list[tuple[int, bool, int]]]:
    """Seqs 1..n mostly in order (as devices send them), some swapped (late arrivals), some sent again, cut into
    batches anywhere; each with a skew flag and a delay in seconds, mostly unremarkable."""
    n = draw(st.integers(1, 150))
    seqs = list(range(1, n + 1))
    for i, j in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=8)):
        seqs[i], seqs[j] = seqs[j], seqs[i]
    for i, at in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n)), max_size=8)):
        seqs.insert(at, seqs[i])
    how = st.sampled_from([(False, 0)] * 8 + [(True, 0), (False, 70)])  # a flag or a 70 s delay breaks a run
    marked = [(seq, *draw(how)) for seq in seqs]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(marked)), max_size=8))) | {len(marked)})
    return [marked[a:b] for a, b in zip([0, *cuts], cuts) if b > a]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batches=arrivals())
def test_any_order_of_seqs_is_stored_exactly_once_across_batches(tmp_path_factory: pytest.TempPathFactory,
                                                                 batches: list[list[tuple[int, bool, int]]]) -> None:
    """Each seq is taken the first time only, every taken one is stored with its own metadata (runs grown in one
    batch and again in the next, holes filled late, runs broken by the skew flag or their 65.5 s span), and a
    store opened afresh finds them all again."""
    db = tmp_path_factory.mktemp("runs") / "fleet.db"
    store = HubStore(db)
    taken: dict[int, tuple[int, int]] = {}  # seq -> (received ms, skewed)
    for batch in batches:
        with store.transaction():
            for seq, skewed, late_s in batch:
                received = T0 + seq * 1000 + late_s * 1000
                first = store.insert_message("dev-1", 1, seq, "t", received - 40, received / 1000, skewed)
                assert first == (seq not in taken), (seq, taken.keys())
                taken.setdefault(seq, (received, int(skewed)))
    store.close()
    stored = {seq: (round(received_at * 1000), skewed) for _d, _b, seq, _k, _ts, received_at, skewed in messages(db)}
    assert stored == taken
    again = HubStore(db)
    assert put(again, sorted(taken)) == [False] * len(taken)
    again.close()
