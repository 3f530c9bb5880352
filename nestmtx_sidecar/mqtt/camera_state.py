"""A camera's live state as MQTT keeps it retained, worked out from the camera's events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..events import Event, isoformat


@dataclass
class CameraState:
    """What a late subscriber needs to know of a camera, kept up to date from its events."""

    id: int
    credential_id: int
    name: str
    path: str | None
    demand: bool = False
    ready: bool = False
    readers: int = 0
    stream_expires_at: str | None = None
    last_error: dict[str, Any] | None = None
    updated_at: str = field(default_factory=lambda: isoformat(dt.datetime.now(dt.UTC)))

    def apply(self, event: Event) -> None:
        details = event.details
        if event.event in ("demand", "unDemand"):
            self.demand = event.event == "demand"
        elif event.event == "ready":
            self.ready = True
        elif event.event == "notReady":
            # The source is gone: so are its readers and the Nest stream behind it.
            self.ready, self.readers, self.stream_expires_at = False, 0, None
        elif event.event == "read":
            self.readers += 1
        elif event.event == "unread":
            self.readers = max(0, self.readers - 1)
        elif event.event == "extended":
            self.stream_expires_at = details.get("expiresAt")
        elif event.event in ("failed-extension", "error"):
            self.last_error = {"error": details.get("error"), "reason": details.get("reason"),
                               "at": isoformat(event.at)}
        self.updated_at = isoformat(event.at)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "path": self.path, "demand": self.demand,
                "ready": self.ready, "readers": self.readers,
                "streamExpiresAt": self.stream_expires_at, "lastError": self.last_error,
                "updatedAt": self.updated_at}
