"""Spooled hook events: replayed in firing order, with their time, once, after a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Events, RunningSidecar
from tests.mediamtx import MediaMTX, add_camera, busybox_path, hook_settings
from tests.services import start_sidecar


def spool_file(directory: Path, millis: int, seq: int, hook: str, body: Any,
               pid: int = 4242) -> Path:
    directory.mkdir(exist_ok=True)
    file = directory / f"{millis}.{seq}.{pid}.{hook}.json"
    file.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return file


async def test_replay_in_firing_order_with_original_time_exactly_once(
        server: RunningSidecar, tmp_path: Path) -> None:
    camera = await add_camera(server.sidecar.store, "cam")
    spool = tmp_path / "spool"
    base = 1_790_000_000_000
    # Written out of order; same millisecond told apart by the sub-millisecond part, which
    # must compare as a number (9 < 10), not as text.
    spool_file(spool, base + 5, 0, "unread", {"MTX_PATH": "cam", "MTX_READER_ID": "r"})
    spool_file(spool, base, 10, "read", {"MTX_PATH": "cam", "MTX_READER_ID": "r"})
    spool_file(spool, base, 9, "ready", {"MTX_PATH": "cam", "MTX_QUERY": "q=1"}, pid=99999)
    spool_file(spool, base + 7, 0, "available", {"MTX_PATH": "unknown"})
    seen = Events.subscribed(server.sidecar.bus).seen
    assert await server.sidecar.receiver.replay_spool(spool) == 4
    await server.sidecar.bus.drain()
    assert [(e.event, e.entity) for e in seen] == [
        ("ready", camera), ("read", camera), ("unread", camera), ("ready", None)]
    assert [e.at for e in seen] == [dt.datetime.fromtimestamp((base + off) / 1000, dt.UTC)
                                    for off in (0, 0, 5, 7)]
    assert all(e.details["replayed"] is True for e in seen)
    assert seen[0].details["query"] == "q=1"
    assert list(spool.iterdir()) == []
    assert await server.sidecar.receiver.replay_spool(spool) == 0
    assert len(seen) == 4


async def test_unreadable_spool_files_are_set_aside(server: RunningSidecar,
                                                    tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    bad = [spool_file(spool, 1, 0, "ready", b"{not json"),
           spool_file(spool, 2, 0, "nosuchhook", {"MTX_PATH": "x"}),
           spool_file(spool, 3, 0, "read", {"MTX_QUERY": "no path"})]
    good = spool_file(spool, 4, 0, "read", {"MTX_PATH": "x"})
    (spool / ".5.0.1.read.json.tmp").write_text("{")  # a hook still writing
    assert await server.sidecar.receiver.replay_spool(spool) == 1
    assert not good.exists()
    assert sorted(p.name for p in spool.iterdir()) == sorted(
        [".5.0.1.read.json.tmp", *(f.with_suffix(".bad").name for f in bad)])


GOOD_BODY = {"MTX_PATH": "cam", "MTX_READER_ID": ""}
# Each kind of bad file, as (name, body) for the n-th file of a spool.
BAD_FILES: dict[str, Callable[[int], tuple[str, bytes]]] = {
    "deeply nested JSON": lambda n: (f"{BASE + n}.0.1.read.json", b"[" * 50_000),
    "nested past the limit in a value": lambda n: (
        f"{BASE + n}.0.1.read.json",
        b'{"MTX_PATH": "x", "MTX_QUERY": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    "timestamp beyond any clock": lambda n: (
        f"{'9' * 200}.{n}.1.read.json", json.dumps(GOOD_BODY).encode()),
    "name too long to claim": lambda n: (
        f"{'9' * 240}.{n}.1.read.json", json.dumps(GOOD_BODY).encode()),
    "timestamp past the year 9999": lambda n: (
        f"{10 ** 17 + n}.0.1.read.json", json.dumps(GOOD_BODY).encode()),
    "timestamp not a number": lambda n: (f"x{n}.0.1.read.json", json.dumps(GOOD_BODY).encode()),
    "not JSON": lambda n: (f"{BASE + n}.0.1.read.json", b"{not json"),
    "unknown hook": lambda n: (f"{BASE + n}.0.1.nosuchhook.json", json.dumps(GOOD_BODY).encode()),
    "dot segment": lambda n: (f"{BASE + n}.0.1.read.json", b'{"MTX_PATH": "a/../cam"}'),
}
BASE = 1_790_000_000_000


async def test_no_bad_file_stops_the_replay_of_the_files_after_it(
        server: RunningSidecar, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    seen = Events.subscribed(server.sidecar.bus).seen
    pids = itertools.count(1)

    async def replay(spool: Path) -> int:
        replayed = await server.sidecar.receiver.replay_spool(spool)
        await server.sidecar.bus.drain()
        return replayed

    # Hypothesis drives a plain function; it runs in a thread so the server keeps serving.
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kinds=st.lists(st.sampled_from(["good", *BAD_FILES]), min_size=1, max_size=8))
    def sweep(kinds: list[str]) -> None:
        spool = Path(tempfile.mkdtemp(dir=tmp_path))
        pid = next(pids)  # ids are delivered once: each example's files are new calls
        good, bad = [], []
        for n, kind in enumerate(kinds):
            if kind == "good":
                spool_file(spool, BASE + n, 0, "read", {**GOOD_BODY, "MTX_READER_ID": str(n)},
                           pid=pid)
                good.append(str(n))
            else:
                name, body = BAD_FILES[kind](n)
                (spool / name).write_bytes(body)
                bad.append(Path(name).with_suffix(".bad").name)
        del seen[:]
        caplog.clear()
        replayed = asyncio.run_coroutine_threadsafe(replay(spool), loop).result(30)
        assert replayed == len(good)
        assert [e.details["readerId"] for e in seen] == good
        assert sorted(p.name for p in spool.iterdir()) == sorted(bad)
        set_aside = [r for r in caplog.records if "as .bad" in r.getMessage()]
        assert len(set_aside) == len(bad)

    await asyncio.to_thread(sweep)


async def test_missing_spool_dir_is_nothing_to_replay(server: RunningSidecar,
                                                      tmp_path: Path) -> None:
    assert await server.sidecar.receiver.replay_spool(tmp_path / "absent") == 0


async def test_events_spooled_while_the_sidecar_is_down_arrive_once_after_restart(
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {"NESTMTX_SPOOL_DIR": str(spool), "NESTMTX_SPOOL_REPLAY_DELAY": "2"}
    first = start_sidecar(tmp_path, env)
    secret = first.hook_secret
    first.stop()
    mtx = MediaMTX(hook_settings(), {"PATH": busybox_path(tmp_path / "bin"),
                                     "NESTMTX_URL": first.url, "NESTMTX_HOOK_SECRET": secret,
                                     "NESTMTX_SPOOL_DIR": str(spool)})
    fired = [("read" if n % 2 == 0 else "unread", f"cam{n % 3}", str(n)) for n in range(12)]
    for hook, path, reader in fired:
        result = await mtx.run(hook, path, MTX_READER_ID=reader)
        assert result.returncode == 0 and "spooled" in result.stderr.decode()
    assert len(list(spool.glob("*.json"))) == len(fired)

    second = start_sidecar(tmp_path, env, port=first.port)
    try:
        token = await second.login()
        client = socketio.AsyncClient(reconnection=False)
        received: list[dict[str, Any]] = []
        done = asyncio.get_running_loop().create_future()

        async def on_event(payload: dict[str, Any]) -> None:
            received.append(payload)
            if payload["details"].get("readerId") == "live" and not done.done():
                done.set_result(None)

        client.on("nestmtx:*", on_event)
        await client.connect(second.url, auth={"token": token}, transports=["websocket"])
        # A live hook after the replay: everything replayed arrives before it.
        await wait_for_empty(spool)
        live = await mtx.run("read", "cam0", MTX_READER_ID="live")
        assert live.returncode == 0, live.stderr
        await asyncio.wait_for(done, 10)
        await client.disconnect()
    finally:
        second.stop()
    replayed = [p for p in received if p["details"].get("replayed")]
    assert [(p["event"], p["details"]["path"], p["details"]["readerId"]) for p in replayed] == [
        (hook, path, reader) for hook, path, reader in fired]
    assert received[len(fired):] == [p for p in received if not p["details"].get("replayed")]
    assert len(received) == len(fired) + 1 and received[-1]["details"]["readerId"] == "live"
    assert list(spool.iterdir()) == []


async def wait_for_empty(directory: Path) -> None:
    from tests.services import wait_until

    await wait_until(lambda: not list(directory.glob("*.json*")), seconds=15)
