"""Home Assistant MQTT discovery: the retained configs that make cameras and credentials appear."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..modules.version import VERSION
from ..nest.devices.media import EVENT_IMAGE
from ..nest.devices.messages import KIND_TRAITS

ONLINE, OFFLINE = "online", "offline"
COMPONENTS = ("binary_sensor", "sensor", "event", "image")
# The binary sensors of device events, with their device class: on at an event, off after
# OFF_DELAY s without another (an SDM event is a moment; most devices send no end of it).
EVENT_SENSORS = {"motion": "motion", "person": "occupancy"}
OFF_DELAY = 30


class Discovery:
    """Builds discovery topics and configs for one sidecar (one MQTT base topic)."""

    def __init__(self, base: str, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        # Object ids may hold only [A-Za-z0-9_-]; the base can hold slashes.
        self.node = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "nestmtx"

    def state_topic(self, domain: str, entity_id: int) -> str:
        return f"{self.base}/state/{domain}/{entity_id}"

    def image_topic(self, camera_id: int | str) -> str:
        """Where the camera's last event picture is kept (retained, the JPEG's bytes)."""
        return f"{self.base}/image/camera/{camera_id}"

    def camera_configs(self, camera: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Topic -> config for a camera item (as the cameras module returns it)."""
        camera_id = camera["id"]
        device: dict[str, Any] = {
            "identifiers": [f"{self.node}_camera_{camera_id}"],
            "name": camera["name"] or f"Camera {camera_id}",
            "manufacturer": "Google",
            "model": _model(camera.get("type") or ""),
        }
        if camera.get("room"):
            device["suggested_area"] = camera["room"]
        state = self.state_topic("camera", camera_id)
        entities = {
            ("binary_sensor", "streaming"): {
                "name": "Streaming", "device_class": "running",
                "value_template": "{{ 'ON' if value_json.ready else 'OFF' }}",
                # demand, readers and the last error become attributes of the entity.
                "json_attributes_topic": state,
            },
            ("sensor", "viewers"): {
                "name": "Viewers", "icon": "mdi:eye", "state_class": "measurement",
                "value_template": "{{ value_json.readers }}",
            },
            ("sensor", "stream_expiry"): {
                "name": "Stream expiry", "device_class": "timestamp",
                # Home Assistant reads the string None as "unknown" (no stream running).
                "value_template": "{{ value_json.streamExpiresAt or 'None' }}",
            },
        }
        entities.update(self._device_event_entities(camera_id, camera.get("traits") or []))
        return self._configs(f"camera_{camera_id}", device, state, entities)

    def _device_event_entities(self, camera_id: int, traits: list[str]
                               ) -> dict[tuple[str, str], dict[str, Any]]:
        """The event entity, motion/person sensors and last picture, as the device has them."""
        kinds = [kind for kind, trait in KIND_TRAITS.items() if trait in traits]
        events = f"{self.base}/events/camera/{camera_id}"
        entities: dict[tuple[str, str], dict[str, Any]] = {}
        if kinds:
            entities[("event", "device_event")] = {
                "name": "Event", "device_class": "doorbell" if "chime" in kinds else "motion",
                "event_types": kinds,
                # Every camera event comes on the wildcard; only device events render (Home
                # Assistant ignores an empty rendering), with their ids and media URLs.
                "state_topic": f"{events}/+",
                "value_template": (
                    "{% if value_json.event in " + json.dumps(kinds) + " %}{{ {"
                    "'event_type': value_json.event, "
                    "'event_id': value_json.details.eventId, "
                    "'timestamp': value_json.details.timestamp, "
                    "'image': value_json.details.image, "
                    "'clip': value_json.details.clip} | tojson }}{% endif %}"),
            }
        for kind, device_class in EVENT_SENSORS.items():
            if kind in kinds:
                entities[("binary_sensor", kind)] = {
                    "name": kind.capitalize(), "device_class": device_class,
                    "state_topic": f"{events}/{kind}",
                    "value_template": "{{ value_json.event }}", "payload_on": kind,
                    "off_delay": OFF_DELAY,
                }
        if EVENT_IMAGE in traits:
            entities[("image", "last_event")] = {
                "name": "Last event", "image_topic": self.image_topic(camera_id),
                "content_type": "image/jpeg",
            }
        return entities

    def credential_configs(self, credential: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Topic -> config for a credentials item."""
        credential_id = credential["id"]
        device = {
            "identifiers": [f"{self.node}_credentials_{credential_id}"],
            "name": credential["description"] or f"Nest credentials {credential_id}",
            "manufacturer": "Google", "model": "Device Access project",
        }
        state = self.state_topic("credentials", credential_id)
        entities = {
            ("binary_sensor", "authenticated"): {
                "name": "Authenticated", "icon": "mdi:account-key",
                "value_template": "{{ 'ON' if value_json.authenticated else 'OFF' }}",
                "json_attributes_topic": state,
            },
        }
        return self._configs(f"credentials_{credential_id}", device, state, entities)

    def owns(self, topic: str) -> bool:
        """A discovery config topic of this sidecar (so a stale one may be cleared)."""
        rest = topic.removeprefix(self.prefix + "/")
        parts = rest.split("/")
        return rest != topic and len(parts) == 3 and parts[0] in COMPONENTS and \
            parts[2] == "config" and parts[1].startswith(
                (f"{self.node}_camera_", f"{self.node}_credentials_"))

    def _configs(self, owner: str, device: dict[str, Any], state_topic: str,
                 entities: Mapping[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        configs = {}
        for (component, key), entity in entities.items():
            unique_id = f"{self.node}_{owner}_{key}"
            # An image has no state topic (its picture comes on image_topic).
            topics = {} if component == "image" else {"state_topic": state_topic}
            configs[f"{self.prefix}/{component}/{unique_id}/config"] = {
                **topics,
                **entity,
                "unique_id": unique_id,
                "availability_topic": f"{self.base}/status",
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "device": device,
                "origin": {"name": "nestmtx-sidecar", "sw_version": VERSION},
            }
        return configs


def _model(device_type: str) -> str:
    """`sdm.devices.types.DOORBELL` -> `Nest doorbell`."""
    kind = device_type.rsplit(".", 1)[-1].replace("_", " ").lower()
    return f"Nest {kind}" if kind else "Nest camera"
