"""Home Assistant discovery of device events, with the real mosquitto, the fake Google and fake
Pub/Sub: a camera with the motion and person traits gets an event entity, two binary sensors
and an image entity; a motion event reaches its topic and the image topic holds its JPEG.

The configs are checked against Home Assistant's MQTT discovery schemas, extracted here from
homeassistant/components/mqtt/{event,binary_sensor,image}.py and schemas.py (installing
homeassistant for a test would pull hundreds of packages): the required keys, the type of every
key the sidecar sends, the device classes, and no key Home Assistant does not know (it drops
unknown keys silently, so a misspelt one would go unnoticed there). The value templates are
rendered with Jinja2, as Home Assistant does, on the payloads the sidecar publishes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from nestmtx_sidecar.events import Event
from tests.fakes.google import FakeGoogle, camera, jpeg
from tests.fakes.pubsub import FakePubSub
from tests.test_device_events import connect, motion, porch, sidecar
from tests.test_mqtt import Mosquitto, Watcher, decode

_STR, _INT, _LIST = str, int, list
# Keys every MQTT entity takes (MQTT_ENTITY_COMMON_SCHEMA and availability), with their types.
_COMMON = {"name": _STR, "unique_id": _STR, "device": dict, "origin": dict, "icon": _STR,
           "availability_topic": _STR, "payload_available": _STR,
           "payload_not_available": _STR, "json_attributes_topic": _STR,
           "json_attributes_template": _STR, "entity_category": _STR, "object_id": _STR,
           "enabled_by_default": bool, "qos": _INT, "encoding": _STR}
# component -> (required keys, further keys and their types, device classes)
HA_SCHEMAS: dict[str, tuple[set[str], dict[str, type], set[str]]] = {
    "event": ({"state_topic", "event_types"},
              {"state_topic": _STR, "event_types": _LIST, "value_template": _STR,
               "device_class": _STR}, {"button", "doorbell", "motion"}),
    "binary_sensor": ({"state_topic"},
                      {"state_topic": _STR, "value_template": _STR, "payload_on": _STR,
                       "payload_off": _STR, "off_delay": _INT, "expire_after": _INT,
                       "force_update": bool, "device_class": _STR},
                      {"motion", "occupancy", "presence", "running", "problem"}),
    # image_topic and url_topic are exclusive, one of them required; content_type goes
    # with image_topic only. No state_topic.
    "image": (set(), {"image_topic": _STR, "url_topic": _STR, "content_type": _STR,
                      "image_encoding": _STR, "url_template": _STR}, set()),
}


def ha_problems(component: str, config: Mapping[str, Any]) -> list[str]:
    """What Home Assistant's discovery schema for `component` would refuse (or drop)."""
    required, specific, classes = HA_SCHEMAS[component]
    known = {**_COMMON, **specific}
    problems = [f"missing {key}" for key in sorted(required - set(config))]
    for key, value in config.items():
        if key not in known:
            problems.append(f"unknown key {key}")
        elif not isinstance(value, known[key]) or (known[key] is int and
                                                  isinstance(value, bool)):
            problems.append(f"{key} is {type(value).__name__}, not {known[key].__name__}")
    if "device_class" in config and config["device_class"] not in classes:
        problems.append(f"device_class {config['device_class']!r}")
    if component == "event" and not all(isinstance(t, str)
                                        for t in config.get("event_types") or []):
        problems.append("event_types must be strings")
    if component == "binary_sensor" and isinstance(config.get("off_delay"), int) and \
            config["off_delay"] <= 0:
        problems.append("off_delay must be positive")
    if component == "image" and ("image_topic" in config) == ("url_topic" in config):
        problems.append("exactly one of image_topic and url_topic")
    if component == "image" and "content_type" in config and "url_topic" in config:
        problems.append("content_type with url_topic")
    if "+" in config.get("availability_topic", "") or "#" in config.get(
            "availability_topic", ""):
        problems.append("availability_topic is a publish topic: no wildcard")
    return problems


def render(template: str, payload: bytes) -> str:
    """A value template applied as Home Assistant does: `value` and `value_json`."""
    text = payload.decode()
    return jinja2.Environment().from_string(template).render(
        value=text, value_json=json.loads(text)).strip()


def test_the_schema_check_fails_on_a_missing_or_mistyped_key() -> None:
    good = {"name": "Event", "state_topic": "a/+", "event_types": ["motion"]}
    assert ha_problems("event", good) == []
    assert ha_problems("event", {**good, "event_types": "motion"}) == \
        ["event_types is str, not list"]
    assert ha_problems("event", {"name": "Event", "state_topic": "a"}) == \
        ["missing event_types"]
    assert ha_problems("binary_sensor", {"state_topic": "a", "off_delay": "30"}) == \
        ["off_delay is str, not int"]
    assert ha_problems("image", {"image_topic": "a", "state_topc": "b"}) == \
        ["unknown key state_topc"]
    assert ha_problems("image", {"name": "x"}) == ["exactly one of image_topic and url_topic"]


async def test_a_camera_with_motion_and_person_gets_event_sensors_and_its_last_picture(
        tmp_path: Path) -> None:
    picture = jpeg(96, 64)
    google = FakeGoogle(devices={"project-1": [camera(
        "cam-1", "Porch", traits=("CameraMotion", "CameraPerson", "CameraEventImage"))]})
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        async with google.serve():
            pubsub = FakePubSub(google.token_scopes)
            async with pubsub.serve():
                async with sidecar(tmp_path, google, pubsub, mqtt_url=broker.url) as e:
                    await connect(e)
                    camera_id = await porch(e)
                    node = f"nestmtx_camera_{camera_id}"
                    topics = {
                        "event": f"homeassistant/event/{node}_device_event/config",
                        "motion": f"homeassistant/binary_sensor/{node}_motion/config",
                        "person": f"homeassistant/binary_sensor/{node}_person/config",
                        "image": f"homeassistant/image/{node}_last_event/config",
                    }
                    image_topic = f"nestmtx/image/camera/{camera_id}"
                    async with Watcher(broker, "homeassistant/#", "nestmtx/#") as watcher:
                        configs = {key: decode(await watcher.expect(
                            topic, lambda m: bool(m.payload))) for key, topic in topics.items()}
                        for key, config in configs.items():
                            assert ha_problems(topics[key].split("/")[1], config) == [], key
                            assert config["device"]["identifiers"] == [node]
                        event = configs["event"]
                        assert event["event_types"] == ["motion", "person"]  # no sound, no chime
                        assert event["device_class"] == "motion"
                        assert (configs["motion"]["device_class"],
                                configs["person"]["device_class"]) == ("motion", "occupancy")
                        assert configs["motion"]["off_delay"] == 30
                        assert configs["image"]["image_topic"] == image_topic
                        assert configs["image"]["content_type"] == "image/jpeg"
                        assert "state_topic" not in configs["image"]

                        google.camera_event("cam-1", "ev-ha", picture)
                        e.pubsub.publish(motion("ev-ha"))
                        sent = await watcher.expect(f"nestmtx/events/camera/{camera_id}/motion")
                        assert decode(sent)["details"]["eventId"] == "ev-ha"  # topic as before
                        image = await watcher.expect(image_topic)
                        assert image.payload == picture

                        # What Home Assistant makes of that message, through the configs.
                        assert sent.topic.matches(event["state_topic"])
                        fired = json.loads(render(event["value_template"], sent.payload))
                        assert fired == {"event_type": "motion", "event_id": "ev-ha",
                                         "timestamp": decode(sent)["details"]["timestamp"],
                                         "image": decode(sent)["details"]["image"], "clip": None}
                        assert sent.topic.matches(configs["motion"]["state_topic"])
                        assert not sent.topic.matches(configs["person"]["state_topic"])
                        assert render(configs["motion"]["value_template"], sent.payload) == \
                            configs["motion"]["payload_on"]
                        # Other camera events come on the same wildcard and render to nothing.
                        ready = Event("camera", "ready", camera_id, {"path": "porch"}).payload()
                        assert render(event["value_template"], json.dumps(ready).encode()) == ""

                    async with Watcher(broker, image_topic) as late:  # kept for late comers
                        kept = await late.expect(image_topic)
                        assert kept.retain and kept.payload == picture
                    # A picture of no camera, left at the broker, for the restart below.
                    async with broker.client() as client:
                        await client.publish("nestmtx/image/camera/77", picture, qos=1,
                                             retain=True)

                # Restarted: the sweep clears the orphan, and keeps the served camera's picture
                # (there is none to publish again until its next event).
                async with Watcher(broker, "nestmtx/image/#") as watcher, \
                        sidecar(tmp_path, google, pubsub, mqtt_url=broker.url) as e:
                    await watcher.expect("nestmtx/image/camera/77", lambda m: m.payload == b"")
                    async with Watcher(broker, "nestmtx/image/#") as late:
                        kept = await late.expect(image_topic)
                        assert kept.retain and kept.payload == picture
                        assert all(m.topic.value == image_topic for m in late.messages)

                    # Disabled: the entities and the picture go, as the other configs do.
                    async with Watcher(broker, "homeassistant/#", "nestmtx/image/#") as watcher:
                        reply = await e.client.put(f"/api/cameras/{camera_id}",
                                                   json={"is_enabled": False})
                        assert reply.status_code == 200, reply.text
                        for topic in [*topics.values(), image_topic]:
                            await watcher.expect(topic, lambda m: m.payload == b"")
    finally:
        broker.stop()
