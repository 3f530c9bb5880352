"""The event log's window: what it can replay, and when it must say it cannot."""

from __future__ import annotations

import time

from nestmtx_sidecar.socketio.event_log import Entry, Window, format_offset, parse_offset


def entry(ms: int, seq: int = 0) -> Entry:
    return Entry((ms, seq), ("camera:ready",), {"n": ms}, f"u{ms}-{seq}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_entries_after_an_offset_are_replayed_oldest_first() -> None:
    window = Window()
    start = window.floor
    first, second = entry(start[0] + 1), entry(start[0] + 1, 1)
    window.add(first)
    window.add(second)
    assert window.after(start) == [first, second]
    assert window.after(first.offset) == [second]
    assert window.after(second.offset) == []


def test_an_offset_from_before_what_is_kept_cannot_be_replayed() -> None:
    window = Window(limit=2)
    base = window.floor[0]
    entries = [entry(base + n) for n in range(1, 4)]
    for each in entries:
        window.add(each)
    assert len(window) == 2
    assert window.after(entries[0].offset) == entries[1:]  # the one trimmed was its own
    assert window.after((base, 0)) is None  # the first entry after it is gone


def test_entries_read_back_at_start_past_the_age_bound_leave_no_hole() -> None:
    window = Window(seconds=60)
    older, old = entry(now_ms() - 95_000), entry(now_ms() - 90_000)
    recent = entry(now_ms() - 1_000)
    window.load([older, old, recent])
    assert len(window) == 1  # the two old ones are past 60 s
    assert window.after(old.offset) == [recent]  # nothing between them was in the stream
    assert window.after(older.offset) is None  # `old` came after it, and is gone


def test_offsets_are_parsed_strictly() -> None:
    assert parse_offset("1764583200123-7") == (1764583200123, 7)
    assert format_offset((1764583200123, 7)) == "1764583200123-7"
    for bad in ("", "12", "-1", "1-", "x-1", "1-2-3", "\uff11-2", 12, None, "9" * 60 + "-0"):
        assert parse_offset(bad) is None, bad
