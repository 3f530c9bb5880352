"""`/metrics` over real HTTP: counters and gauges move with real traffic."""

from __future__ import annotations

import logging

import httpx
import socketio
from prometheus_client.parser import text_string_to_metric_families

from nestmtx_sidecar.logstream import LogStream
from nestmtx_sidecar.security import Redactor
from tests.services import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(base_url=url) as client:
        reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_hook_calls_and_events_are_counted_by_outcome(server) -> None:
    before = await scrape(server.url)
    auth = {"Authorization": f"Bearer {server.hook_secret}"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(2):
            reply = await client.post("/hooks/ready", headers=auth,
                                      json={"MTX_PATH": "front", "MTX_SOURCE_TYPE": "rtspSource"})
            assert reply.status_code == 202
        assert (await client.post("/hooks/ready", json={"MTX_PATH": "front"})).status_code == 401
        assert (await client.post("/hooks/ready", headers=auth,
                                  json={"MTX_PATH": 1})).status_code == 422
        assert (await client.post("/hooks/nonsense", headers=auth,
                                  json={"MTX_PATH": "x"})).status_code == 404
    after = await scrape(server.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("nestmtx_hook_calls_total", hook="ready", outcome="accepted") == 2
    assert moved("nestmtx_hook_calls_total", hook="ready", outcome="unauthorized") == 1
    assert moved("nestmtx_hook_calls_total", hook="ready", outcome="invalid") == 1
    assert moved("nestmtx_hook_calls_total", hook="unknown", outcome="not_found") == 1
    assert moved("nestmtx_events_total", domain="camera", event="ready") == 2
    assert moved("nestmtx_events_total", domain="camera", event="notReady") == 0


async def test_connected_sockets_follow_clients(server, token) -> None:
    assert value(await scrape(server.url), "nestmtx_connected_sockets") == 0
    clients = [socketio.AsyncClient() for _ in range(2)]
    for client in clients:
        await client.connect(server.url, auth={"token": token}, transports=["websocket"])
    # The server registers the socket before it answers the connect.
    assert value(await scrape(server.url), "nestmtx_connected_sockets") == 2
    await clients[0].disconnect()
    await wait_until(lambda: server.sidecar.gateway.connected == 1)
    assert value(await scrape(server.url), "nestmtx_connected_sockets") == 1
    await clients[1].disconnect()


async def test_process_metrics_and_no_secrets(server, token) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        text = (await client.get("/metrics")).text
    assert "process_cpu_seconds_total" in text
    for secret in (token, server.hook_secret, server.settings.app_key):
        assert secret not in text


async def test_dropped_log_records_are_counted(server) -> None:
    before = value(await scrape(server.url), "nestmtx_log_records_dropped_total")
    stream = LogStream(Redactor(), queue_size=2)  # never drained: a sink that cannot keep up
    for n in range(5):
        stream.handle(logging.LogRecord("tests", logging.WARNING, __file__, 0, "record %d",
                                        (n,), None))
    assert stream.dropped == 3
    after = value(await scrape(server.url), "nestmtx_log_records_dropped_total")
    assert after - before == 3
