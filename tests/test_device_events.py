"""Device events end to end: the real sidecar, the fake Google and fake Pub/Sub on loopback,
real Socket.IO clients (python-socketio and socket.io-client)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from nestmtx_sidecar.events import isoformat
from nestmtx_sidecar.storage.store import credentials_table, utcnow
from tests.conftest import RunningSidecar, make_settings, serve_in_loop
from tests.fakes.google import PUBSUB_SCOPE, SDM_SCOPE, FakeGoogle, camera
from tests.fakes.pubsub import FakePubSub, Subscription
from tests.nest_support import Events, add_credential, enable, nest_sidecar
from tests.services import create_database, wait_until
from tests.test_events_e2e import JsSubscriber, PySubscriber
from tests.test_mqtt import Mosquitto, Watcher, decode
from tests.test_sdm_events import fixture

PROJECT = "my-home-123"
TOPIC = f"projects/{PROJECT}/topics/nestmtx-project-1"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/nestmtx-project-1"
DEVICE = "enterprises/project-1/devices/cam-1"
MOTION = "sdm.devices.events.CameraMotion.Motion"
BOTH_SCOPES = f"{SDM_SCOPE} {PUBSUB_SCOPE}"


@dataclass
class Env:
    google: FakeGoogle
    pubsub: FakePubSub
    running: RunningSidecar
    events: Events
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def fakes() -> AsyncIterator[tuple[FakeGoogle, FakePubSub]]:
    google = FakeGoogle(devices={"project-1": [camera("cam-1", "Porch")]})
    async with google.serve():
        pubsub = FakePubSub(google.token_scopes)
        async with pubsub.serve():
            yield google, pubsub


@contextlib.asynccontextmanager
async def sidecar(tmp_path: Path, google: FakeGoogle, pubsub: FakePubSub, **overrides: Any
                  ) -> AsyncIterator[Env]:
    async with nest_sidecar(tmp_path, google, pubsub_api_url=pubsub.url, **overrides) as (
            running, events, client):
        running.sidecar.nest.device_events.retry_initial = 0.5
        yield Env(google, pubsub, running, events, client)


@contextlib.asynccontextmanager
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with fakes() as (google, pubsub), sidecar(tmp_path, google, pubsub) as running:
        yield running


async def connect(env: Env, scope: str = BOTH_SCOPES, **fields: Any) -> dict[str, Any]:
    """A credential with events, authenticated; returns its reply once its loop pulls."""
    fields = fields or {"gcp_project_id": PROJECT}
    credential = await add_credential(env.client, env.google,
                                      env.google.issue_refresh_token(scope), **fields)
    await env.events.wait("credentials", "authenticated")
    if scope == BOTH_SCOPES:
        await wait_until(lambda: env.pubsub.count("pull") > 0, 15)
    return credential


async def porch(env: Env) -> int:
    """The synced camera, enabled on path `porch`; its id."""
    await wait_until(lambda: env.google.count("devices.list", 200) > 0)
    cameras = (await env.client.get("/api/cameras")).json()["items"]
    [porch] = [c for c in cameras if c["uid"] == DEVICE]
    await enable(env.client, porch["id"], "porch")
    return int(porch["id"])


def motion(event_id: str = "ev-1", at: dt.datetime | None = None, **extra: Any
           ) -> dict[str, Any]:
    """Google's motion message (the reference's fixture), for cam-1, at `at` (default now)."""
    body = fixture("motion")
    body["timestamp"] = isoformat(at or dt.datetime.now(dt.UTC))
    body["eventId"] = str(uuid.uuid4())  # the message's own id differs per message
    body["resourceUpdate"]["events"][MOTION]["eventId"] = event_id
    body.update(extra)
    return body


async def read(env: Env, credential_id: int) -> dict[str, Any]:
    reply = await env.client.get(f"/api/credentials/{credential_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_set_up_creates_topic_grant_and_subscription_then_lists_devices(
        tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        # An existing topic whose policy already has a publisher: kept, the group added.
        e.pubsub.topics[TOPIC] = {"version": 1, "etag": "BwXk", "bindings": [
            {"role": "roles/pubsub.publisher", "members": ["user:me@example.com"]},
            {"role": "roles/pubsub.viewer", "members": ["user:me@example.com"]}]}
        credential = await connect(e)
        assert e.pubsub.members(TOPIC, "roles/pubsub.publisher") == [
            "user:me@example.com", "group:sdm-publisher@googlegroups.com"]
        assert e.pubsub.members(TOPIC, "roles/pubsub.viewer") == ["user:me@example.com"]
        assert e.pubsub.subscriptions[SUBSCRIPTION].topic == TOPIC
        calls = [(c.endpoint, c.status) for c in e.pubsub.calls if c.endpoint != "pull"]
        assert calls == [("createTopic", 409), ("getIamPolicy", 200), ("setIamPolicy", 200),
                         ("getIamPolicy", 200), ("createSubscription", 200)]
        subscribed = next(c.at for c in e.pubsub.calls if c.endpoint == "createSubscription")
        assert [c for c in e.google.calls if c.endpoint == "devices.list" and c.at > subscribed]
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert pubsub["status"] == "waiting" and pubsub["last_event_at"] is None
        assert pubsub["topic"] == TOPIC and TOPIC in pubsub["instruction"]
        # Nothing in the 10 minutes after set-up: the reply warns that the topic is likely
        # not entered in the Device Access Console.
        async with e.running.sidecar.store.begin() as conn:
            await conn.execute(credentials_table.update()
                               .where(credentials_table.c.id == credential["id"])
                               .values(pubsub_ready_at=utcnow() - dt.timedelta(minutes=11)))
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert pubsub["status"] == "no_events"
        assert TOPIC in pubsub["message"] and "Device Access Console" in pubsub["message"]


async def test_relation_updates_sync_devices_and_trait_updates_are_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "nestmtx_sidecar.nest")
    async with env(tmp_path) as e:
        await connect(e)
        await porch(e)
        lists = e.google.count("devices.list", 200)
        e.google.devices["project-1"].append(camera("cam-2", "Garden"))
        e.pubsub.publish(fixture("traits"))
        e.pubsub.publish(fixture("relation"))
        await wait_until(lambda: any(": 2 devices" in r.getMessage() for r in caplog.records), 15)
        assert e.google.count("devices.list", 200) == lists + 1
        cameras = (await e.client.get("/api/cameras")).json()["items"]
        assert sorted(c["name"] for c in cameras) == ["Garden", "Porch"]
        await wait_until(lambda: len(e.pubsub.acked) == 2)
        assert any("sdm.devices.traits.Connectivity" in r.getMessage() and
                   r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.node
async def test_a_motion_event_reaches_python_and_javascript_subscribers(
        tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        credential = await connect(e)
        camera_id = await porch(e)
        token = await e.running.login()
        py = PySubscriber()
        await py.client.connect(e.running.url, auth={"token": token}, transports=["websocket"])
        js, status = await JsSubscriber.start(e.running.url, token)
        assert status == {"status": "connected"}
        at = dt.datetime.now(dt.UTC)
        message_id = e.pubsub.publish(motion("ev-1", at, eventThreadState="STARTED"))
        details = {"name": "Porch", "path": "porch", "enabled": True, "eventId": "ev-1",
                   "eventSessionId": "CjY5Y3VKaTZwR3o4Y19YbTVfMF...", "threadState": "STARTED",
                   "timestamp": isoformat(at), "image": None, "clip": None}
        expected = {"domain": "camera", "entity": camera_id, "event": "motion",
                    "details": details, "at": isoformat(at)}
        topics = ("camera:motion", "camera:*", "nestmtx:*")
        assert await py.events(3) == [(topic, expected) for topic in topics]
        assert [(line["topic"], line["payload"]) for line in await js.events(3)] == [
            (topic, expected) for topic in topics]
        await py.client.disconnect()
        await js.close()
        await wait_until(lambda: message_id in e.pubsub.acked)
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert pubsub["status"] == "receiving" and pubsub["last_event_at"]


async def test_duplicates_and_redeliveries_are_emitted_once(tmp_path: Path) -> None:
    async with fakes() as (google, pubsub):
        pubsub.ack_deadline = 1.0
        async with sidecar(tmp_path, google, pubsub) as e:
            await connect(e)
            await porch(e)
            e.pubsub.fail_next("acknowledge", 503)  # the first batch comes again
            first = e.pubsub.publish(motion("ev-1"))
            await e.events.wait("camera", "motion")
            # The same SDM event in another message, and a thread update adding a person.
            again = e.pubsub.publish(motion("ev-1"))
            update = fixture("person_thread")
            update.update(timestamp=isoformat(dt.datetime.now(dt.UTC)))
            update["resourceUpdate"]["events"][MOTION]["eventId"] = "ev-1"
            thread = e.pubsub.publish(update)
            await e.events.wait("camera", "person")
            await wait_until(lambda: {first, again, thread} <= set(e.pubsub.acked), 15)
            assert e.pubsub.count("acknowledge", 503) == 1 and e.pubsub.acked.count(first) == 1
            assert [m.details["eventId"] for m in e.events.named("camera", "motion")] == ["ev-1"]
            [person] = e.events.named("camera", "person")
            assert (person.details["eventId"], person.details["threadState"]) == ("n:2",
                                                                                  "UPDATED")


async def test_stale_and_malformed_messages_are_acknowledged_not_emitted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "nestmtx_sidecar.nest.devices")
    async with env(tmp_path) as e:
        await connect(e)
        await porch(e)
        unknown = motion("ev-unknown")
        unknown["resourceUpdate"]["events"] = {"sdm.devices.events.Future.Thing": {"eventId": "u"}}
        published = [
            e.pubsub.publish(motion("ev-stale", dt.datetime.now(dt.UTC) - dt.timedelta(hours=12))),
            e.pubsub.publish_raw("%%% not base64 %%%"),
            e.pubsub.publish_raw("%%% again not base64 %%%"),
            e.pubsub.publish_raw("bm90IGpzb24="),  # "not json"
            e.pubsub.publish({"eventId": "x", "timestamp": isoformat(dt.datetime.now(dt.UTC))}),
            e.pubsub.publish(unknown),
            e.pubsub.publish(fixture("traits")),
        ]
        e.pubsub.publish(motion("ev-fresh"))  # after them all: when it is out, they were seen
        await e.events.wait("camera", "motion")
        await wait_until(lambda: set(published) <= set(e.pubsub.acked), 15)
        assert [m.details["eventId"] for m in e.events.named("camera", "motion")] == ["ev-fresh"]
        logged = [r.getMessage() for r in caplog.records]
        assert sum("s old" in line and "not emitted" in line for line in logged) == 1, logged
        malformed = [line for line in logged if "is not an SDM event message" in line]
        assert [line.split("(")[-1] for line in malformed] == [
            "base64: the data is not base64); acknowledged and dropped",
            "json: the data is not JSON); acknowledged and dropped",
            "shape: neither resourceUpdate nor relationUpdate); acknowledged and dropped"]
        assert sum("sdm.devices.events.Future.Thing" in line for line in logged) == 1
        # Each message was delivered once: acknowledged, none came back.
        assert all(e.pubsub.acked.count(m) == 1 for m in published)


async def test_a_deleted_subscription_is_created_again(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        await connect(e)
        await porch(e)
        e.pubsub.delete_subscription(SUBSCRIPTION)
        await wait_until(lambda: SUBSCRIPTION in e.pubsub.subscriptions, 15)
        assert e.pubsub.count("pull", 404) == 1 and e.pubsub.count("createSubscription") == 2
        e.pubsub.publish(motion("ev-after"))
        event = await e.events.wait("camera", "motion")
        assert event.details["eventId"] == "ev-after"


async def test_429_and_503_back_off_instead_of_looping(tmp_path: Path) -> None:
    async with env(tmp_path) as e:
        await connect(e)
        await porch(e)
        e.pubsub.fail_next("pull", 429, *[503] * 50)
        start = time.monotonic()
        await wait_until(lambda: e.pubsub.count("pull", 429) == 1)
        window = 3.5
        await wait_until(lambda: time.monotonic() - start > window, window + 1)
        failed = e.pubsub.count("pull", since=start)
        # Backoff 0.5, 1, 2 s (+ up to 0.5 s jitter each): at most 3 tries in 3.5 s.
        assert 2 <= failed <= 3, failed
        e.pubsub.heal("pull")
        e.pubsub.publish(motion("ev-healed"))
        event = await e.events.wait("camera", "motion", within=20)
        assert event.details["eventId"] == "ev-healed"


async def test_a_token_without_the_pubsub_scope_says_to_reauthorize(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "nestmtx_sidecar.nest.devices.events")
    async with env(tmp_path) as e:
        credential = await connect(e, scope=SDM_SCOPE)
        await wait_until(lambda: any("Re-authorize" in r.getMessage() for r in caplog.records))
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert pubsub["status"] == "error" and "Re-authorize" in pubsub["message"]
        assert "insufficient authentication scopes" in pubsub["message"]
        assert e.pubsub.count("createTopic", 403) >= 1 and e.pubsub.topics == {}
        # A new grant with the scope: the loop starts over at once, not after its backoff.
        reply = await e.client.put(f"/api/credentials/{credential['id']}", json={
            "refresh_token": e.google.issue_refresh_token(BOTH_SCOPES)})
        assert reply.status_code == 200, reply.text
        await e.events.wait("credentials", "authenticated", count=2)
        await wait_until(lambda: e.pubsub.count("pull", 200) > 0, 15)
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert (pubsub["status"], pubsub["message"]) == ("waiting", None)


async def test_two_replicas_on_one_postgresql_emit_each_event_once(
        tmp_path: Path, postgres_url: str) -> None:
    """The lease holder emits, cannot acknowledge, and stops; the other replica takes the
    lease over, gets the redelivery, and does not emit it again."""
    database = await create_database(postgres_url, f"ev{uuid.uuid4().hex}")
    shared = {"database_url": database, "app_key": Fernet.generate_key().decode()}
    async with fakes() as (google, pubsub), contextlib.AsyncExitStack() as b_stack:
        pubsub.ack_deadline = 1.0
        async with contextlib.AsyncExitStack() as a_stack:
            a = await a_stack.enter_async_context(sidecar(tmp_path / "a", google, pubsub,
                                                          **shared))
            await wait_until(lambda: a.running.sidecar.nest.lease.held)
            b = await b_stack.enter_async_context(serve_in_loop(make_settings(
                tmp_path / "b", google_token_uri=google.token_endpoint,
                sdm_api_url=google.sdm_url, pubsub_api_url=pubsub.url, **shared)))
            b_events = Events()
            b.sidecar.bus.subscribe(b_events)
            await connect(a)
            await porch(a)
            pubsub.fail_next("acknowledge", 503)
            message = pubsub.publish(motion("ev-once"))
            await a.events.wait("camera", "motion")
            await wait_until(lambda: pubsub.count("acknowledge", 503) == 1)
        # A is gone without acknowledging; B holds the lease now and pulls the redelivery.
        a_gone = time.monotonic()
        assert message not in pubsub.acked
        await wait_until(lambda: message in pubsub.acked, 30)
        assert b.sidecar.nest.lease.held and pubsub.count("acknowledge", 200, since=a_gone)
        assert len(a.events.named("camera", "motion")) == 1
        assert b_events.named("camera", "motion") == []


async def test_a_restart_between_pull_and_acknowledge_does_not_emit_again(
        tmp_path: Path) -> None:
    async with fakes() as (google, pubsub):
        pubsub.ack_deadline = 1.0
        async with sidecar(tmp_path, google, pubsub) as before:
            await connect(before)
            await porch(before)
            pubsub.fail_next("acknowledge", 503)
            message = pubsub.publish(motion("ev-restart"))
            await before.events.wait("camera", "motion")
            await wait_until(lambda: pubsub.count("acknowledge", 503) == 1)
        assert message not in pubsub.acked
        async with sidecar(tmp_path, google, pubsub) as after:  # the same data dir and database
            await wait_until(lambda: message in pubsub.acked, 20)
            assert after.events.named("camera", "motion") == []


async def test_a_motion_event_reaches_an_mqtt_subscriber(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        async with fakes() as (google, pubsub), \
                sidecar(tmp_path, google, pubsub, mqtt_url=broker.url) as e:
            await connect(e)
            camera_id = await porch(e)
            async with Watcher(broker, "nestmtx/events/#") as watcher:
                e.pubsub.publish(motion("ev-mqtt"))
                event = await e.events.wait("camera", "motion")
                message = await watcher.expect(f"nestmtx/events/camera/{camera_id}/motion")
                assert decode(message) == event.payload()
                assert decode(message)["details"]["eventId"] == "ev-mqtt"
    finally:
        broker.stop()


async def test_a_subscription_alone_is_only_pulled(tmp_path: Path) -> None:
    theirs = "projects/their-proj/subscriptions/sdm"
    async with env(tmp_path) as e:
        e.pubsub.topics["projects/their-proj/topics/sdm"] = {"version": 1, "etag": "ACAB"}
        e.pubsub.subscriptions[theirs] = Subscription("projects/their-proj/topics/sdm", 60)
        credential = await connect(e, pubsub_subscription=theirs)
        await porch(e)
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert (pubsub["subscription"], pubsub["topic"]) == (theirs, None)
        message = e.pubsub.publish(motion("ev-theirs"))
        assert (await e.events.wait("camera", "motion")).details["eventId"] == "ev-theirs"
        await wait_until(lambda: message in e.pubsub.acked)
        assert {c.endpoint for c in e.pubsub.calls} == {"pull", "acknowledge"}
        # Not the sidecar's to recreate: the reply says what is wrong.
        e.pubsub.delete_subscription(theirs)
        await wait_until(lambda: e.pubsub.count("pull", 404) > 0)
        await wait_until(lambda: e.pubsub.count("pull", 404) > 1, 10)
        pubsub = (await read(e, credential["id"]))["pubsub"]
        assert pubsub["status"] == "error" and theirs in pubsub["message"]
        assert "createSubscription" not in {c.endpoint for c in e.pubsub.calls}


async def test_empty_pulls_that_return_at_once_do_not_loop(tmp_path: Path) -> None:
    async with fakes() as (google, pubsub):
        pubsub.pull_hold = 0.0  # Google's long poll not holding, as behind some proxies
        async with sidecar(tmp_path, google, pubsub) as e:
            await connect(e)
            start = time.monotonic()
            await wait_until(lambda: time.monotonic() - start > 3.0, 4)
            assert e.pubsub.count("pull", 200, since=start) <= 4
