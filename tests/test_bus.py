"""The event bus: producers never wait for a slow subscriber; order, bounds and shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import socketio

from nestmtx_sidecar import events as events_module
from nestmtx_sidecar.events import Event, EventBus
from nestmtx_sidecar.metrics import Metrics
from tests.conftest import RunningSidecar
from tests.fakes.google import FakeGoogle
from tests.mediamtx import MediaMTX, hook_settings
from tests.test_nest_streams import cameras_ready

GOOGLE_STOPS_IN = 3.0  # StopRtspStream's answer; the hook's curl gives up at 3 s


async def test_undemand_is_answered_and_heard_while_google_is_still_stopping(tmp_path) -> None:
    google = FakeGoogle()
    async with google.serve(), cameras_ready(tmp_path, google) as (running, _events, client,
                                                                   _ids):
        source = await client.get("/hooks/source/cam0",
                                  headers={"Authorization": f"Bearer {running.hook_secret}"})
        assert source.status_code == 200 and source.text.startswith("rtsp "), source.text
        heard: asyncio.Future[tuple[float, Any]] = asyncio.get_running_loop().create_future()
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("camera:unDemand",
               lambda data: heard.done() or heard.set_result((time.monotonic(), data)))
        await sio.connect(running.url, auth={"token": client.headers["authorization"][7:]},
                          transports=["websocket"])
        mediamtx = MediaMTX(hook_settings(), {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "NESTMTX_URL": running.url,
            "NESTMTX_HOOK_SECRET": running.hook_secret})
        try:
            google.fail_next("StopRtspStream", ("slow", GOOGLE_STOPS_IN))
            started = time.monotonic()
            undemand = await mediamtx.run("unDemand", "cam0")
            answered = time.monotonic() - started
            assert undemand.returncode == 0 and not undemand.stderr_lines, undemand.stderr
            arrived, payload = await asyncio.wait_for(heard, GOOGLE_STOPS_IN)
            # One try of the hook, answered long before Google is, and heard at once.
            assert answered < 1.0
            assert arrived - started < 1.0
            assert payload["details"]["path"] == "cam0"
            assert google.count("StopRtspStream") == 0  # Google is still at it
        finally:
            await sio.disconnect()
        await running.sidecar.bus.drain()
        stops = [c for c in google.calls if c.endpoint == "StopRtspStream"]
        assert len(stops) == 1 and stops[0].status == 200


async def test_each_subscriber_gets_every_event_in_order_at_its_own_pace() -> None:
    bus = EventBus()
    fast: list[int] = []
    slow: list[int] = []
    gate = asyncio.Event()

    async def quick(event: Event) -> None:
        fast.append(event.details["n"])

    async def stuck(event: Event) -> None:
        await gate.wait()
        slow.append(event.details["n"])

    bus.subscribe(stuck)
    bus.subscribe(quick)
    for n in range(50):
        await bus.publish(Event("camera", "read", None, {"n": n}))
    await asyncio.sleep(0)  # one loop turn is all the quick one needs...
    assert fast == list(range(50))
    assert slow == []  # ...while the stuck one held nobody up
    gate.set()
    await bus.drain()
    assert slow == list(range(50))


async def test_a_failing_subscriber_keeps_its_later_events(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    bus = EventBus()
    seen: list[int] = []

    async def flaky(event: Event) -> None:
        if event.details["n"] == 1:
            raise RuntimeError("broken adapter")
        seen.append(event.details["n"])

    bus.subscribe(flaky)
    for n in range(3):
        await bus.publish(Event("camera", "read", None, {"n": n}))
    await bus.drain()
    assert seen == [0, 2]
    assert "broken adapter" in caplog.text


async def test_a_full_queue_drops_counts_and_warns_once(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    bus = EventBus(queue_limit=5)
    gate = asyncio.Event()
    got: list[int] = []

    async def lagging(event: Event) -> None:
        await gate.wait()
        got.append(event.details["n"])

    bus.subscribe(lagging)
    registry = Metrics().registry

    def dropped() -> float:
        return registry.get_sample_value("nestmtx_events_dropped_total",
                                         {"subscriber": lagging.__qualname__}) or 0.0

    before = dropped()
    await bus.publish(Event("camera", "read", None, {"n": 0}))
    await asyncio.sleep(0)  # the worker takes the first one and waits at the gate
    for n in range(1, 30):
        await bus.publish(Event("camera", "read", None, {"n": n}))
    gate.set()
    await bus.drain()
    assert got == [0, 1, 2, 3, 4, 5]  # what was queued, in order; the rest dropped
    assert dropped() - before == 24
    warnings = [r for r in caplog.records if "not keeping up" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


async def test_metrics_show_the_drops(server: RunningSidecar) -> None:
    bus = server.sidecar.bus
    gate = asyncio.Event()

    async def metrics_lagger(event: Event) -> None:
        await gate.wait()

    unsubscribe = bus.subscribe(metrics_lagger)
    try:
        for n in range(events_module.QUEUE_LIMIT + 3):
            await bus.publish(Event("camera", "read", None, {"n": n}))
        async with httpx.AsyncClient(base_url=server.url) as http:
            text = (await http.get("/metrics")).text
        line = next(line for line in text.splitlines()
                    if line.startswith("nestmtx_events_dropped_total") and
                    "metrics_lagger" in line)
        assert float(line.rsplit(" ", 1)[1]) >= 2
    finally:
        gate.set()
        unsubscribe()


async def test_stop_delivers_what_it_can_then_cancels_and_leaves_no_task() -> None:
    bus = EventBus()
    delivered: list[int] = []
    cancelled = asyncio.Event()

    async def quick(event: Event) -> None:
        delivered.append(event.details["n"])

    async def hung(event: Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus.subscribe(quick)
    bus.subscribe(hung)
    for n in range(3):
        await bus.publish(Event("camera", "read", None, {"n": n}))
    started = time.monotonic()
    await bus.stop(within=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert delivered == [0, 1, 2] and cancelled.is_set()
    await bus.publish(Event("camera", "read", None, {"n": 3}))  # after stop: nothing starts
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bus:")]
    assert delivered == [0, 1, 2]


async def test_an_idle_bus_holds_no_task() -> None:
    bus = EventBus()

    async def quick(event: Event) -> None:
        pass

    bus.subscribe(quick)
    await bus.publish(Event("camera", "read", None, {}))
    await bus.drain()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bus:")]
