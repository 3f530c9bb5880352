"""Home Assistant MQTT discovery: the retained configs that make cameras and credentials appear."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..modules.version import VERSION

ONLINE, OFFLINE = "online", "offline"
COMPONENTS = ("binary_sensor", "sensor")


class Discovery:
    """Builds discovery topics and configs for one sidecar (one MQTT base topic)."""

    def __init__(self, base: str, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        # Object ids may hold only [A-Za-z0-9_-]; the base can hold slashes.
        self.node = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "nestmtx"

    def state_topic(self, domain: str, entity_id: int) -> str:
        return f"{self.base}/state/{domain}/{entity_id}"

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
        return self._configs(f"camera_{camera_id}", device, state, entities)

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
            configs[f"{self.prefix}/{component}/{unique_id}/config"] = {
                **entity,
                "unique_id": unique_id,
                "state_topic": state_topic,
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
