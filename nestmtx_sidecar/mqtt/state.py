"""The retained-state mirror: camera and credential state plus their Home Assistant configs.

It follows the cameras and credentials modules and the bus, and puts what the broker should
keep into the outbox; retained topics of this sidecar that match nothing any more are cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import NotFound
from ..events import Event, isoformat
from ..modules.cameras import CameraRef, Cameras
from ..modules.credentials import Credentials
from ..nest.devices.messages import EVENT_KINDS
from .camera_state import CameraState
from .discovery import COMPONENTS, Discovery
from .outbox import Outbox

logger = logging.getLogger(__name__)

_CREDENTIAL_EVENTS = {"authenticated", "reauthenticated", "unauthenticated"}
_EVERY = {"itemsPerPage": -1}
_DEVICE_EVENTS = frozenset(EVENT_KINDS.values())

# (camera id, eventId) -> the event picture's JPEG bytes, None when none is kept here.
Pictures = Callable[[int, str], Awaitable[bytes | None]]


class StateMirror:
    """Keeps the broker's retained state and discovery configs equal to the database."""

    def __init__(self, outbox: Outbox, discovery: Discovery, cameras: Cameras,
                 credentials: Credentials, pictures: Pictures | None = None) -> None:
        self._outbox = outbox
        self._pictures = pictures
        self._discovery = discovery
        self._cameras = cameras
        self._credentials = credentials
        self._owned: dict[tuple[str, int], list[str]] = {}  # entity -> its retained topics
        self._camera_states: dict[int, CameraState] = {}
        self._credential_states: dict[int, dict[str, Any]] = {}
        cameras.on_change(self._camera_changed)
        credentials.on_change(self._credential_changed)

    @property
    def sweep_filters(self) -> list[str]:
        """Where retained topics of this sidecar left from before (a deleted camera) are found."""
        return [*(f"{self._discovery.prefix}/{component}/+/config" for component in COMPONENTS),
                f"{self._discovery.base}/state/+/+", self._discovery.image_topic("+")]

    async def load(self) -> None:
        """Align discovery and state with the database: things changed while we were away."""
        cameras = (await self._cameras.list(None, _EVERY))["items"]
        _align(self._camera_states, [item for item in cameras if item["is_enabled"]],
               self._forget_camera, self._track_camera)
        _align(self._credential_states, (await self._credentials.list(None, _EVERY))["items"],
               self._forget_credential, self._track_credential)

    async def on_event(self, event: Event) -> None:
        """The retained state a bus event changes."""
        if event.entity is None:
            return
        if event.domain == "camera":
            await self._camera_event(event.entity, event)
        elif event.domain == "credentials" and event.event in _CREDENTIAL_EVENTS:
            self._credential_event(event.entity, event)

    def sweep(self, topic: str, payload: bytes) -> None:
        """A retained message older than this connection: clear it if it is ours and stale."""
        if not payload or self._outbox.holds(topic):
            return
        image = topic.removeprefix(self._discovery.image_topic(""))
        if image != topic:
            # The last picture outlives a restart (nothing to publish again) while its
            # camera is served; only an untracked camera's is stale.
            stale = not image.isdigit() or int(image) not in self._camera_states
        else:
            stale = self._discovery.owns(topic) or topic.startswith(
                f"{self._discovery.base}/state/")
        if stale:
            logger.info("clearing stale retained MQTT topic %s", topic)
            self._outbox.retain(topic, None)

    def _own(self, key: tuple[str, int], configs: Mapping[str, Mapping[str, Any]],
             state: Mapping[str, Any]) -> None:
        state_topic = self._discovery.state_topic(*key)
        for topic, config in configs.items():
            self._outbox.retain(topic, config)
        self._outbox.retain(state_topic, state)
        self._owned[key] = [*configs, state_topic]

    def _disown(self, key: tuple[str, int]) -> None:
        for topic in self._owned.pop(key, ()):
            self._outbox.retain(topic, None)

    def _track_camera(self, item: Mapping[str, Any]) -> None:
        state = self._camera_states.get(item["id"])
        if state is None:
            state = self._camera_states[item["id"]] = CameraState(
                item["id"], item["credential_id"], item["name"], item["mtx_path"])
        else:
            state.credential_id, state.name, state.path = \
                item["credential_id"], item["name"], item["mtx_path"]
        self._own(("camera", item["id"]), self._discovery.camera_configs(item), state.payload())

    def _forget_camera(self, camera_id: int) -> None:
        self._camera_states.pop(camera_id, None)
        self._disown(("camera", camera_id))
        self._outbox.retain(self._discovery.image_topic(camera_id), None)

    def _track_credential(self, item: Mapping[str, Any]) -> None:
        state = self._credential_states[item["id"]] = {
            "id": item["id"], "description": item["description"],
            "authenticated": item["authenticated"], "error": item["auth_error"],
            "updatedAt": item["updated_at"]}
        self._own(("credentials", item["id"]), self._discovery.credential_configs(item), state)

    def _forget_credential(self, credential_id: int) -> None:
        self._credential_states.pop(credential_id, None)
        self._disown(("credentials", credential_id))

    async def _camera_event(self, camera_id: int, event: Event) -> None:
        if camera_id not in self._camera_states and event.details.get("enabled"):
            await self._refresh_camera(camera_id)  # enabled elsewhere (another replica)
        state = self._camera_states.get(camera_id)
        if state is not None and event.event in _DEVICE_EVENTS:
            await self._picture(camera_id, event)
        if state is not None:
            state.apply(event)
            self._outbox.retain(self._discovery.state_topic("camera", camera_id),
                                state.payload())

    async def _picture(self, camera_id: int, event: Event) -> None:
        """A device event with a picture: it becomes the camera's last event picture."""
        event_id = event.details.get("eventId")
        if self._pictures is None or not event.details.get("image") or not event_id:
            return
        data = await self._pictures(camera_id, str(event_id))
        if data:  # None on a replica that did not fetch it: the one that did publishes it
            self._outbox.republish(self._discovery.image_topic(camera_id), data)

    def _credential_event(self, credential_id: int, event: Event) -> None:
        state = self._credential_states.get(credential_id)
        if state is None:
            return
        authenticated = event.event != "unauthenticated"
        state.update(authenticated=authenticated,
                     error=None if authenticated else event.details.get("error"),
                     updatedAt=isoformat(event.at))
        self._outbox.retain(self._discovery.state_topic("credentials", credential_id), state)

    async def _refresh_camera(self, camera_id: int) -> None:
        try:
            item = await self._cameras.read(None, camera_id)
        except NotFound:
            item = None
        if item is not None and item["is_enabled"]:
            self._track_camera(item)
        else:
            self._forget_camera(camera_id)

    async def _camera_changed(self, before: CameraRef | None, after: CameraRef | None) -> None:
        ref = after or before
        try:
            if ref is None:
                return
            if after is None or not after.enabled:
                self._forget_camera(ref.id)
            else:
                await self._refresh_camera(ref.id)
        except Exception:
            # MQTT must never fail the change that caused it; the next connect re-syncs.
            logger.exception("MQTT bridge could not follow a camera change")

    async def _credential_changed(self, credential_id: int, change: str) -> None:
        try:
            if change == "deleted":  # its cameras go with it (ON DELETE CASCADE)
                self._forget_credential(credential_id)
                for state in list(self._camera_states.values()):
                    if state.credential_id == credential_id:
                        self._forget_camera(state.id)
            else:
                self._track_credential(await self._credentials.read(None, credential_id))
        except Exception:
            logger.exception("MQTT bridge could not follow a credentials change")


def _align(known: Mapping[int, Any], items: list[dict[str, Any]],
           forget: Callable[[int], None], track: Callable[[Mapping[str, Any]], None]) -> None:
    """Forget what is known but no longer listed, then track every listed item."""
    listed = {item["id"] for item in items}
    for entity_id in set(known) - listed:
        forget(entity_id)
    for item in items:
        track(item)
