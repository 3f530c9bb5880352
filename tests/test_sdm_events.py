"""The SDM event message parser, on Google's documented messages (tests/fixtures/sdm_events)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from nestmtx_sidecar.nest.devices.messages import MalformedMessage, parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "sdm_events"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def encoded(body: Any) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


def test_a_motion_event() -> None:
    message = parse_message(encoded(fixture("motion")))
    [event] = message.events
    assert (event.kind, event.device, event.event_id, event.session_id, event.thread_state) == (
        "motion", "enterprises/project-1/devices/cam-1", "FWWVQVUdGNUlTU2V4MGV2aTNXV...",
        "CjY5Y3VKaTZwR3o4Y19YbTVfMF...", None)
    assert event.timestamp == "2019-01-01T00:00:01Z"
    assert event.at == dt.datetime(2019, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert message.event_id == "0120ecc7-3b57-4eb4-9941-91609f189fb4"
    assert (message.traits, message.relation, message.unknown_events) == (None, None, ())


def test_a_thread_update_with_several_events_and_a_clip_preview() -> None:
    message = parse_message(encoded(fixture("person_thread")))
    assert [(e.kind, e.event_id, e.thread_state) for e in message.events] == [
        ("motion", "FWWVQVUdGNUlTU2V4MGV2aTNXV...", "UPDATED"), ("person", "n:2", "UPDATED")]
    assert message.unknown_events == ()  # the clip preview is known, just not an event here
    assert message.at == dt.datetime(2019, 1, 1, 0, 0, 5, 123456, tzinfo=dt.UTC)


def test_chime_traits_and_relation_updates() -> None:
    [chime] = parse_message(encoded(fixture("chime"))).events
    assert (chime.kind, chime.thread_state) == ("chime", "STARTED")
    traits = parse_message(encoded(fixture("traits")))
    assert traits.events == () and traits.traits == {
        "sdm.devices.traits.Connectivity": {"status": "OFFLINE"}}
    relation = parse_message(encoded(fixture("relation")))
    assert relation.relation is not None and relation.relation["type"] == "CREATED"


def test_unknown_event_types_are_named() -> None:
    body = fixture("motion")
    body["resourceUpdate"]["events"]["sdm.devices.events.Future.Thing"] = {"eventId": "x"}
    message = parse_message(encoded(body))
    assert message.unknown_events == ("sdm.devices.events.Future.Thing",)
    assert [e.kind for e in message.events] == ["motion"]


def _broken(change: Any) -> dict[str, Any]:
    body = fixture("motion")
    change(body)
    return body


@pytest.mark.parametrize("data,kind", [
    ("%%% not base64 %%%", "base64"),
    (base64.b64encode(b"\xff\xfe not json").decode(), "json"),
    (encoded([1, 2]), "shape"),
    (encoded({"eventId": "x", "timestamp": "2019-01-01T00:00:01Z"}), "shape"),
    (encoded(_broken(lambda b: b.update(timestamp="yesterday"))), "timestamp"),
    (encoded(_broken(lambda b: b.update(timestamp=5))), "shape"),
    (encoded(_broken(lambda b: b["resourceUpdate"].update(events=[]))), "shape"),
    (encoded(_broken(lambda b: b["resourceUpdate"]["events"].update(
        {"sdm.devices.events.CameraSound.Sound": "loud"}))), "shape"),
    (encoded(_broken(lambda b: b["resourceUpdate"]["events"][
        "sdm.devices.events.CameraMotion.Motion"].update(eventId=None))), "shape"),
    (encoded(_broken(lambda b: b["resourceUpdate"]["events"][
        "sdm.devices.events.CameraMotion.Motion"].update(eventId="x" * 600))), "shape"),
    (encoded(_broken(lambda b: b.update(eventThreadState=1))), "shape"),
    (encoded({"eventId": "x", "timestamp": "2019-01-01T00:00:01Z", "relationUpdate": 3}),
     "shape"),
])
def test_malformed_messages_say_what_kind(data: str, kind: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(data)
    assert caught.value.kind == kind
