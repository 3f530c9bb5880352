"""SDM event messages (the base64 `data` of a Pub/Sub message) parsed into typed values.

Shapes: developers.google.com/nest/device-access/api/events. A message carries device events
(`resourceUpdate.events`, possibly several, possibly in a thread), trait changes
(`resourceUpdate.traits`) or a relation change (`relationUpdate`: a device added or removed).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...storage.store import as_utc

# The device events that become `camera:<kind>` events.
EVENT_KINDS = {
    "sdm.devices.events.CameraMotion.Motion": "motion",
    "sdm.devices.events.CameraPerson.Person": "person",
    "sdm.devices.events.CameraSound.Sound": "sound",
    "sdm.devices.events.DoorbellChime.Chime": "chime",
}
# The trait a device has when it sends each kind (CameraMotion for CameraMotion.Motion).
KIND_TRAITS = {kind: "sdm.devices.traits." + name.split(".")[3]
               for name, kind in EVENT_KINDS.items()}
# Not an event of its own: the mp4 preview of a session's events.
CLIP_PREVIEW = "sdm.devices.events.CameraClipPreview.ClipPreview"
MAX_ID_LENGTH = 512  # Google's ids are ~100 characters; longer is not an SDM message
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Google may send nanoseconds; Python takes micro


class MalformedMessage(Exception):
    """Not an SDM event message; `kind` names what was wrong (for logging once per kind)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True)
class DeviceEvent:
    kind: str  # motion, person, sound, chime
    device: str  # the SDM device name, enterprises/<project>/devices/<id>
    event_id: str  # the inner eventId: what GenerateImage takes, and the dedupe key
    session_id: str | None
    thread_state: str | None  # STARTED, UPDATED, ENDED for cameras that send threads
    timestamp: str  # Google's, as sent
    at: dt.datetime


@dataclass(frozen=True)
class SdmMessage:
    event_id: str  # the outer eventId: names the message
    at: dt.datetime
    device: str | None
    events: tuple[DeviceEvent, ...]
    unknown_events: tuple[str, ...]  # event keys this version does not know
    traits: Mapping[str, Any] | None
    relation: Mapping[str, Any] | None
    clips: Mapping[str, str] = field(default_factory=dict)  # session -> previewUrl


def parse_message(data: str) -> SdmMessage:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("base64", "the data is not base64") from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise MalformedMessage("json", "the data is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedMessage("shape", "the message is not a JSON object")
    timestamp = _text(body, "timestamp")
    at = _moment(timestamp)
    message_id = _text(body, "eventId")
    relation = body.get("relationUpdate")
    if relation is not None:
        if not isinstance(relation, dict):
            raise MalformedMessage("shape", "relationUpdate is not an object")
        return SdmMessage(message_id, at, None, (), (), None, relation)
    update = body.get("resourceUpdate")
    if not isinstance(update, dict):
        raise MalformedMessage("shape", "neither resourceUpdate nor relationUpdate")
    device = _text(update, "name")
    thread_state = body.get("eventThreadState")
    if thread_state is not None and not isinstance(thread_state, str):
        raise MalformedMessage("shape", "eventThreadState is not a string")
    traits = update.get("traits")
    if traits is not None and not isinstance(traits, dict):
        raise MalformedMessage("shape", "resourceUpdate.traits is not an object")
    raw_events = update.get("events", {})
    if not isinstance(raw_events, dict):
        raise MalformedMessage("shape", "resourceUpdate.events is not an object")
    events, unknown, clips = [], [], {}
    for key, value in raw_events.items():
        kind = EVENT_KINDS.get(key)
        if kind is None and key != CLIP_PREVIEW:
            unknown.append(str(key)[:200])
            continue
        if not isinstance(value, dict):
            raise MalformedMessage("shape", f"{key} is not an object")
        if kind is None:
            clips[_text(value, "eventSessionId")] = _url(value, "previewUrl")
            continue
        session = value.get("eventSessionId")
        if session is not None and not isinstance(session, str):
            raise MalformedMessage("shape", f"{key}.eventSessionId is not a string")
        events.append(DeviceEvent(kind, device, _text(value, "eventId"), session,
                                  thread_state, timestamp, at))
    return SdmMessage(message_id, at, device, tuple(events), tuple(unknown), traits, None,
                      clips)


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise MalformedMessage("shape", f"{key} is missing or not a string")
    return value


def _url(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) \
            or len(value) > 4096:
        raise MalformedMessage("shape", f"{key} is missing or not a URL")
    return value


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    except ValueError:
        raise MalformedMessage("timestamp", f"timestamp {text[:40]!r} is not ISO 8601") from None
    return as_utc(moment)
