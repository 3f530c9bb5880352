"""`/metrics` over real HTTP: counters and gauges move with real traffic."""

from __future__ import annotations

import logging

import httpx
import socketio
from prometheus_client.parser import text_string_to_metric_families

from nestmtx_sidecar.logs.stream import LogStream
from nestmtx_sidecar.security import Redactor
from tests.fakes.google import FakeGoogle, camera
from tests.nest_support import add_credential, enable, nest_sidecar
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
    await wait_until(lambda: server.sidecar.socketio_door.connected == 1)
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


async def test_nest_counters_follow_google_traffic(tmp_path) -> None:
    google = FakeGoogle()
    google.devices["project-1"] = [camera("d1", "Porch")]
    async with google.serve(), nest_sidecar(tmp_path, google) as (running, events, client):
        before = await scrape(running.url)
        google.fail_next("token", 500)  # one transient failure, then the refresh succeeds
        await add_credential(client, google, google.issue_refresh_token())
        await events.wait("credentials", "authenticated")
        await running.sidecar.nest.sync.sync(1)
        camera_id = (await client.get("/api/cameras")).json()["items"][0]["id"]
        await enable(client, camera_id, "porch")
        reply = await client.get("/hooks/source/porch",
                                 headers={"Authorization": f"Bearer {running.hook_secret}"})
        assert reply.status_code == 200, reply.text
        after = await scrape(running.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("nestmtx_token_refreshes_total", outcome="failed") == 1
    assert moved("nestmtx_token_refreshes_total", outcome="ok") == 1
    assert moved("nestmtx_sdm_calls_total", command="devices.list", status="200") >= 1
    assert moved("nestmtx_sdm_calls_total", command="GenerateRtspStream", status="200") == 1
    assert value(after, "nestmtx_stream_sessions") == 1
    assert value(after, "nestmtx_lease_held", lease="nest") == 1  # SQLite: always this node
