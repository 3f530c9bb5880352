"""Log records -> redacted `log` events: seed levels, replay of the last 100, bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import socketio

from nestmtx_sidecar.events import isoformat
from nestmtx_sidecar.logs.stream import REPLAY_SIZE, SLICE_SIZE, TRACE, LogStream
from nestmtx_sidecar.security import Redactor
from tests.conftest import RunningSidecar

SECRETS = {
    "bearer": "Authorization: Bearer abcDEF123.token-value",
    "refresh": "refresh token 1//0gAbCdEfGhIjKlMnOpQrStUv",
    "access": "access ya29.a0AfH6SMBxyz-123_abc",
    "client_secret": "client secret GOCSPX-AbCdEfGhIjKlMnOp",
    "rtsp": "source rtsps://stream.example/cam?auth=ZXhhbXBsZS1zdHJlYW0tdG9rZW4&x=1",
}
SECRET_PARTS = ["abcDEF123.token-value", "1//0gAbCdEfGhIjKlMnOpQrStUv", "ya29.a0AfH6SMBxyz-123_abc",
                "GOCSPX-AbCdEfGhIjKlMnOp", "ZXhhbXBsZS1zdHJlYW0tdG9rZW4"]


@contextlib.contextmanager
def capturing_logger(handler: logging.Handler) -> Iterator[logging.Logger]:
    """A service logger with the stream on the package logger (the stream's own warnings too)."""
    package = logging.getLogger("nestmtx_sidecar")
    level = package.level
    package.setLevel(TRACE)
    package.addHandler(handler)
    try:
        yield logging.getLogger("nestmtx_sidecar.testing")
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


@contextlib.asynccontextmanager
async def running(stream: LogStream) -> AsyncIterator[list[list[dict[str, Any]]]]:
    batches: list[list[dict[str, Any]]] = []

    async def sink(batch: list[dict[str, Any]]) -> None:
        batches.append(batch)

    task = asyncio.create_task(stream.run(sink))
    try:
        yield batches
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def entries(batches: list[list[dict[str, Any]]], count: int) -> list[dict[str, Any]]:
    from tests.services import wait_until

    await wait_until(lambda: sum(map(len, batches)) >= count, seconds=5)
    return [entry for batch in batches for entry in batch]


async def test_records_become_seed_shaped_entries_with_seed_levels() -> None:
    stream = LogStream(Redactor())
    async with running(stream) as batches:
        with capturing_logger(stream) as logger:
            for level in (TRACE, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                          logging.CRITICAL):
                logger.log(level, "level %d", level)
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        got = await entries(batches, 7)
    assert [e["level"] for e in got] == [20, 30, 40, 50, 60, 70, 60]
    assert got[2]["msg"] == f"level {logging.INFO}"
    assert got[6]["msg"] == "failed: ValueError: boom"  # no traceback in the stream
    for entry in got:
        assert set(entry) == {"hostname", "level", "msg", "pid", "service", "time", "timestamp"}
        assert entry["service"] == "testing"
        assert (entry["hostname"], entry["pid"]) == (socket.gethostname(), os.getpid())
        assert entry["timestamp"] == isoformat(dt.datetime.fromtimestamp(entry["time"] / 1000,
                                                                         dt.UTC))


async def test_secrets_are_redacted_including_known_values() -> None:
    redactor = Redactor()
    redactor.add("the-hook-secret-value")
    stream = LogStream(redactor)
    async with running(stream) as batches:
        with capturing_logger(stream) as logger:
            for text in SECRETS.values():
                logger.info("%s", text)
            logger.info("hook called with %s", "the-hook-secret-value")
        got = await entries(batches, len(SECRETS) + 1)
    text = " ".join(e["msg"] for e in got)
    for secret in [*SECRET_PARTS, "the-hook-secret-value"]:
        assert secret not in text
    assert text.count("[redacted]") >= len(SECRETS) + 1
    assert "rtsps://stream.example/cam?auth=[redacted]&x=1" in text  # the URL stays readable


async def test_full_queue_drops_newest_counts_and_reports_them() -> None:
    stream = LogStream(Redactor(), queue_size=10)
    with capturing_logger(stream) as logger:
        for n in range(25):  # no loop running yet: everything waits in the queue
            logger.info("n=%d", n)
        assert stream.dropped == 15
        assert [e["msg"] for e in stream.recent][-1] == "n=24"  # the ring keeps them all
        async with running(stream) as batches:
            got = await entries(batches, 11)
    assert [e["msg"] for e in got[:10]] == [f"n={n}" for n in range(10)]
    assert got[10]["msg"] == "15 log records were dropped: subscribers could not keep up"
    assert got[10]["level"] == 50


async def test_a_burst_is_sent_in_slices_that_let_the_loop_run() -> None:
    stream = LogStream(Redactor())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    seen_ticks: list[int] = []
    sent: list[int] = []

    async def sink(batch: list[dict[str, Any]]) -> None:
        seen_ticks.append(ticks)
        sent.append(len(batch))

    with capturing_logger(stream) as logger:
        for n in range(5 * SLICE_SIZE):
            logger.info("n=%d", n)
        tick_task = asyncio.create_task(ticker())
        task = asyncio.create_task(stream.run(sink))
        from tests.services import wait_until

        await wait_until(lambda: sum(sent) >= 5 * SLICE_SIZE)
        task.cancel()
        tick_task.cancel()
    assert max(sent) <= SLICE_SIZE
    assert all(b > a for a, b in itertools.pairwise(seen_ticks))


def test_replay_ring_iterates_a_snapshot() -> None:
    stream = LogStream(Redactor())
    with capturing_logger(stream) as logger:
        logger.info("first")
        snapshot = iter(stream.recent)
        logger.info("second")  # a plain deque would now raise "mutated during iteration"
        assert [e["msg"] for e in snapshot] == ["first"]


@pytest.fixture
def sidecar_logger(server: RunningSidecar) -> Iterator[logging.Logger]:
    logger = logging.getLogger("nestmtx_sidecar.testing")
    logger.setLevel(TRACE)  # the stream is a root handler: records must pass the logger
    yield logger
    logger.setLevel(logging.NOTSET)


async def test_sockets_get_the_last_100_then_live_redacted_logs(
        server: RunningSidecar, sidecar_logger: logging.Logger) -> None:
    token = await server.login()
    for n in range(150):
        sidecar_logger.info("marker %d", n)
    client = socketio.AsyncClient(reconnection=False)
    logs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client.on("log", logs.put_nowait)
    await client.connect(server.url, auth={"token": token}, transports=["websocket"])
    replayed = [await asyncio.wait_for(logs.get(), 5) for _ in range(REPLAY_SIZE)]
    markers = [e["msg"] for e in replayed if e["msg"].startswith("marker ")]
    # The tail of the markers, in order (later records, if any, follow them).
    assert markers == [f"marker {n}" for n in range(150 - len(markers), 150)]
    assert len(markers) > 50
    sidecar_logger.warning("live %s and %s", SECRETS["bearer"], server.hook_secret)
    entry = await asyncio.wait_for(logs.get(), 5)
    while not entry["msg"].startswith("live"):
        entry = await asyncio.wait_for(logs.get(), 5)
    assert entry["level"] == 50
    assert server.hook_secret not in entry["msg"] and SECRET_PARTS[0] not in entry["msg"]
    await client.disconnect()
