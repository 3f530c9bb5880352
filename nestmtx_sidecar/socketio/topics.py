"""Topic subscription: the rooms a socket is in decide which events and logs reach it.

A socket that never subscribed is in the everything-feed (NestMTX's way); its first
`subscribe` takes it off that feed and into one room per topic it names.
"""

from __future__ import annotations

from typing import Any

import socketio

from ..errors import Invalid

AUTHENTICATED = "authenticated"  # every accepted socket
EVERYTHING = "everything"  # sockets that never chose topics get every event
TOPIC_ROOM = "topic:"  # prefix of the room of each topic a socket subscribed to
MAX_TOPIC_LENGTH = 200
NAMESPACE = "/"


def rooms(topic: str) -> list[str]:
    """The rooms whose sockets get `topic`."""
    return [EVERYTHING, TOPIC_ROOM + topic]


def enter(manager: socketio.AsyncManager, sid: str, topics: tuple[str, ...] | None) -> None:
    """Into the rooms of an accepted socket: its topics, or the everything-feed (None)."""
    names = [EVERYTHING] if topics is None else [TOPIC_ROOM + topic for topic in topics]
    for room in (AUTHENTICATED, *names):
        manager.basic_enter_room(sid, NAMESPACE, room)


def change(manager: socketio.AsyncManager, sid: str, topics: Any, subscribe: bool
           ) -> dict[str, Any]:
    """Subscribe or unsubscribe `topics`; the reply lists the topics the socket now gets."""
    names = _topic_list(topics)
    if isinstance(names, dict):
        return names
    manager.basic_leave_room(sid, NAMESPACE, EVERYTHING)
    move = manager.basic_enter_room if subscribe else manager.basic_leave_room
    for name in names:
        move(sid, NAMESPACE, TOPIC_ROOM + name)
    return {"topics": subscribed(manager, sid)}


def subscribed(manager: socketio.AsyncManager, sid: str) -> list[str]:
    return sorted(room.removeprefix(TOPIC_ROOM) for room in manager.get_rooms(sid, NAMESPACE)
                  if room.startswith(TOPIC_ROOM))


def kept(manager: socketio.AsyncManager, sid: str) -> tuple[str, ...] | None:
    """What a recovering socket gets back: its topics, or None for the everything-feed."""
    if EVERYTHING in manager.get_rooms(sid, NAMESPACE):
        return None
    return tuple(subscribed(manager, sid))


def _topic_list(topics: Any) -> list[str] | dict[str, Any]:
    """A topic or a list of topics, else the error reply saying what is wrong."""
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not topics or not all(
            isinstance(t, str) and 0 < len(t) <= MAX_TOPIC_LENGTH for t in topics):
        return Invalid(
            f"topics must be a topic name or a non-empty list of names of at most "
            f"{MAX_TOPIC_LENGTH} characters").to_dict()
    return topics
