"""A credential's device events (Pub/Sub): the names it uses, their rules, how it goes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import Invalid, field_error
from ..events import isoformat
from ..storage.store import as_utc

PUBLISHER_ROLE, SDM_PUBLISHER = "roles/pubsub.publisher", "group:sdm-publisher@googlegroups.com"
DEVICE_ACCESS_CONSOLE = "https://console.nest.google.com/device-access"
# Set up this long without a single message: the topic is most likely not registered.
NO_EVENTS_WARNING = dt.timedelta(minutes=10)

# Google Cloud's rules: project ids are 6-30 lowercase letters, digits and hyphens; topic and
# subscription ids 3-255 characters, starting with a letter, not with "goog".
PROJECT_RE = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_RESOURCE_ID = r"(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
TOPIC_RE = rf"projects/{PROJECT_RE}/topics/{_RESOURCE_ID}"
SUBSCRIPTION_RE = rf"projects/{PROJECT_RE}/subscriptions/{_RESOURCE_ID}"
PUBSUB_FIELDS = ("gcp_project_id", "pubsub_topic", "pubsub_subscription")


def pubsub_names(row: Any) -> tuple[str | None, str | None]:
    """The credential's topic and subscription: as given, else derived from its projects."""
    topic, subscription = row.pubsub_topic, row.pubsub_subscription
    if row.gcp_project_id:
        base = f"projects/{row.gcp_project_id}"
        topic = topic or f"{base}/topics/nestmtx-{row.dac_project_id}"
        subscription = subscription or f"{base}/subscriptions/nestmtx-{row.dac_project_id}"
    return topic, subscription


def pubsub_status(row: Any, now: dt.datetime) -> dict[str, Any] | None:
    topic, subscription = pubsub_names(row)
    if subscription is None:
        return None
    ready, last = as_utc(row.pubsub_ready_at), as_utc(row.pubsub_last_event_at)
    message = row.pubsub_error
    if message:
        status = "error"
    elif last is not None:
        status = "receiving"
    elif ready is None:
        status = "pending"
    elif now - ready > NO_EVENTS_WARNING:
        status = "no_events"
        message = (f"No device event has arrived in the {(now - ready).seconds // 60} minutes "
                   f"since set-up: check that the topic {topic or 'of ' + subscription} is "
                   "entered in the Device Access Console and events are enabled.")
    else:
        status = "waiting"
    if row.gcp_project_id:
        instruction = (f"In the Device Access Console ({DEVICE_ACCESS_CONSOLE}), open project "
                       f"{row.dac_project_id}, and under Pub/Sub topic enter {topic} and "
                       "enable events. The sidecar did everything else.")
    else:
        instruction = (f"The sidecar pulls {subscription}; its topic must be the one entered "
                       "in the Device Access Console, with events enabled.")
    return {"topic": topic, "subscription": subscription, "status": status, "message": message,
            "last_event_at": isoformat(last) if last else None, "instruction": instruction}


def check_pubsub(fields: dict[str, Any], row: Any) -> None:
    """A topic is only set up within gcp_project_id: without it, it would be ignored."""
    def after(key: str) -> Any:
        return fields[key] if key in fields else getattr(row, key, None)
    if after("pubsub_topic") and not after("gcp_project_id"):
        raise Invalid("pubsub_topic needs gcp_project_id (the project it is set up in); "
                      "to only pull, give pubsub_subscription alone",
                      [field_error("pubsub_topic", "needs gcp_project_id")])
